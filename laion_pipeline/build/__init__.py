"""From staged files to a published release: staging, the tables, the caption index, shards and
their seals, the decision of what to build, the publish.
"""

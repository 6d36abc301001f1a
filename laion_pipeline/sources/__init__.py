"""The LAION sources: profiles (which columns, which filter), the Hugging Face hub, the source
listing and the staged files' records, reading a source file.
"""

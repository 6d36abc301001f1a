"""The published folder: which release is served, the switch, rollback and hold, the data folder's
lock, the Datasette files served with a release.
"""

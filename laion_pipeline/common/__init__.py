"""What every layer uses: errors, settings, the data folder's layout, files, SQLite and DuckDB
connections, code versions, the column schema, FTS phrases, the HTTP client's settings.
"""

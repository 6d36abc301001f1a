"""The queries the site answers: the fast search across shards and the lookup by URL and host."""

"""The list of takedowns (``LAION_BLOCKLIST``): its entries, what each blocks, and a list that
cannot be read refused naming the line or the file; a list at a URL fetched from a server."""

import http.server
import threading

import pytest

from laion_pipeline.common.blocklist import NO_BLOCKLIST, parse_blocklist, read_blocklist
from laion_pipeline.common.errors import ConfigurationError

pytestmark = pytest.mark.fast

LIST = """
# asked by email
https://example.com/a.jpg
host Artist.Example.
hash 4087782417533767768
"""


def test_each_entry_blocks_what_it_names_and_nothing_else():
    listed = parse_blocklist(LIST, "takedowns.txt")
    assert listed.entries == 3
    assert listed.blocks_url("https://example.com/a.jpg")
    assert not listed.blocks_url("https://example.com/b.jpg")
    # A website, with its subdomains, whatever the case, user or port.
    for url in (
        "https://artist.example/x.png",
        "http://cdn.ARTIST.example:8080/y.png",
        "https://me@www.artist.example./z",
    ):
        assert listed.blocks_url(url), url
    assert not listed.blocks_url("https://notartist.example/x.png")
    assert not listed.blocks_url("https://artist.example.com/x.png")
    # In a row: its URL, its hash (text or number), the website itself (its domain row).
    assert listed.blocks_row([1, "a caption", "https://example.com/a.jpg"])
    assert listed.blocks_row(["4087782417533767768"]) and listed.blocks_row([4087782417533767768])
    assert listed.blocks_row(["artist.example", 12]) and listed.blocks_row(["cdn.artist.example"])
    assert not listed.blocks_row(["a caption about artist.example art", 3, None, 0.5])


def test_the_digest_is_what_the_list_blocks():
    a = parse_blocklist(LIST, "a.txt")
    b = parse_blocklist("hash 4087782417533767768\nhost artist.example\n" + LIST, "b.txt")
    assert a.digest == b.digest and len(a.digest) == 12
    assert NO_BLOCKLIST.digest == "" and not NO_BLOCKLIST
    assert parse_blocklist(LIST + "host other.example\n", "c").digest != a.digest


def test_a_line_that_is_no_entry_is_refused_naming_it(tmp_path):
    for line in ("example.com/a.jpg", "host", "host a b", "hash", "url https://x/"):
        with pytest.raises(ConfigurationError, match=r"LAION_BLOCKLIST: line 3 of t.txt"):
            parse_blocklist(f"# one\n\n{line}\n", "t.txt")
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(ConfigurationError, match=f"LAION_BLOCKLIST={missing}: .* cannot be read"):
        read_blocklist(str(missing))
    assert read_blocklist("") is NO_BLOCKLIST and read_blocklist(None) is NO_BLOCKLIST


def test_a_list_at_a_url_is_fetched():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = LIST.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/takedowns.txt?token=s3cret"
        listed = read_blocklist(url)
        assert listed.entries == 3 and listed.blocks_url("https://example.com/a.jpg")
        assert "s3cret" not in listed.origin  # said in logs and metadata: no credentials
    finally:
        server.shutdown()

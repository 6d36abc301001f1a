"""Security: no code from inputs is run, SQL takes inputs only as parameters or quoted
literals and identifiers, the served database cannot be written, secrets stay out of logs,
metadata and files."""

import base64
import json
import re
import shutil
import urllib.error
from pathlib import Path

import pytest
from dagster import DagsterInstance

from laion_pipeline.common.layout import SAMPLE_DIR, DataLayout
from laion_pipeline.common.web import public_url
from laion_pipeline.orchestration.metadata import markdown_list, markdown_table
from laion_pipeline_tests.conftest import build
from laion_pipeline_tests.dagster_dev import REPO_ROOT
from laion_pipeline_tests.datasette_site import DB, served


@pytest.mark.fast
def test_no_code_from_inputs_is_evaluated():
    risky = re.compile(r"\b(eval|exec)\(|\bpickle\b|yaml\.load\(|shell=True|os\.system\(")
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in sorted((REPO_ROOT / "laion_pipeline").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if risky.search(line)
    ]
    assert found == []


@pytest.mark.fast
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@host.example/a.csv", "https://user:***@host.example/a.csv"),
        (
            "https://host.example/a.csv?token=abc&gid=0",
            "https://host.example/a.csv?token=***&gid=0",
        ),
        (
            "https://host.example/a.csv?X-Amz-Signature=abc",
            "https://host.example/a.csv?X-Amz-Signature=***",
        ),
        (
            "https://docs.google.com/x/export?format=csv&gid=0",
            "https://docs.google.com/x/export?format=csv&gid=0",
        ),
        ("https://ghp_TOKEN@host.example/a.csv", "https://***@host.example/a.csv"),
        ("https://:s3cret@host.example/a.csv", "https://***@host.example/a.csv"),
        (
            "https://b.s3.example/a.csv?X-Amz-Credential=AKIA%2F1&X-Amz-Security-Token=t&n=1",
            "https://b.s3.example/a.csv?X-Amz-Credential=***&X-Amz-Security-Token=***&n=1",
        ),
        (
            "https://host.example/a.csv?pwd=1&code=2&sig=3&sv=2024#access_token=4",
            "https://host.example/a.csv?pwd=***&code=***&sig=***&sv=2024#***",
        ),
    ],
)
def test_urls_are_shown_without_their_credentials(url, shown):
    assert public_url(url) == shown


@pytest.mark.fast
def test_captions_and_names_in_metadata_previews_are_text_not_markdown():
    hostile = [
        "![x](http://127.0.0.1:9/p.png)",
        '<img src="http://127.0.0.1:9/q.png">',
        "[click](javascript:alert(1))",
        "*bold* _it_ `code` # head | pipe",
    ]
    table = markdown_table(["caption", "n"], [[text, 1] for text in hostile])
    listed = markdown_list(hostile)
    for text in (table, listed):
        unescaped = re.findall(r"(?<!\\)[!\[\]()<>*_`#]", text.split("\n", 2)[-1])
        assert unescaped == [], text
    assert "\\!\\[x\\]\\(http\\://127\\.0\\.0\\.1\\:9/p\\.png\\)" in table
    assert "| \\*bold\\* \\_it\\_ \\`code\\` \\# head \\| pipe | 1 |" in table


@pytest.mark.parametrize(
    ("userinfo", "query", "secrets"),
    [
        ("reader:pw-67890", "token=tok-12345", ("tok-12345", "pw-67890")),
        ("ghp-user-token-555", "code=code-777", ("ghp-user-token-555", "code-777")),
    ],
)
def test_credentials_in_a_list_url_reach_no_log_metadata_or_file(
    tmp_path, httpserver, userinfo, query, secrets
):
    user, _, password = userinfo.partition(":")
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    httpserver.expect_request(
        "/artists.csv", headers={"Authorization": basic}, query_string=query
    ).respond_with_data((SAMPLE_DIR / "artists.csv").read_bytes(), content_type="text/csv")
    url = f"http://{userinfo}@127.0.0.1:{httpserver.port}/artists.csv?{query}#frag-secret-9"
    instance = DagsterInstance.ephemeral()
    result = build(tmp_path, {"LAION_ARTISTS_CSV_URL": url}, instance=instance)
    assert result.success
    text = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert "artists" in text and files
    for secret in (*secrets, "frag-secret-9"):
        assert secret not in text
        assert not [p for p in files if secret.encode() in p.read_bytes()]


def test_the_served_database_cannot_be_written(sample_build):
    with served(sample_build.root) as site:
        with pytest.raises(urllib.error.HTTPError) as refused:
            site.json(f"/{DB}.json", sql="DELETE FROM images", _shape="objects")
        assert refused.value.code == 400
        assert "Statement must be a SELECT" in json.load(refused.value)["error"]
        count = site.json(f"/{DB}.json", sql="SELECT count(*) AS n FROM images", _shape="array")
        assert count == [{"n": 7000}]


def test_odd_folder_names_are_quoted_not_executed(tmp_path):
    odd = tmp_path / 'it\'s "odd"; DROP TABLE x; --'
    shutil.copytree(SAMPLE_DIR / "data", odd)
    data = tmp_path / "data"
    result = build(data, {"LAION_SOURCE": "local", "LAION_LOCAL_DIR": str(odd)})
    assert result.success
    assert DataLayout(data.resolve()).published_db.exists()
    assert Path(odd).is_dir()

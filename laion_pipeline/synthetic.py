"""Deterministic LAION-shaped parquet files: the bundled sample and benchmark data.

The files have the real dataset's file names and exact column types, a domain mix with the
big hosts of the 2022 analysis on top and a long Zipf-like tail, captions that mention names
from the entity lists, and the nulls and odd URLs the real data has.

Regenerate the bundled sample (what ``laion_pipeline/sample_data`` holds) with::

    python -m laion_pipeline.synthetic --out laion_pipeline/sample_data
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from laion_pipeline.schema import LAION_ARROW_SCHEMA

SAMPLE_DIR = Path(__file__).parent / "sample_data"
SAMPLE_ROWS = 7_000
FILE_COUNT = 7

# The one shard name the 2022 write-up quotes; the other hashes are made up in the same shape.
KNOWN_SHARD_HASHES = {2: "709151a2715d894d"}

# Share of all images for the top hosts, as measured on the real 12M rows in 2022.
HEAD_DOMAINS: tuple[tuple[str, float], ...] = (
    ("i.pinimg.com", 0.0863),
    ("render.fineartamerica.com", 0.0497),
    ("us.123rf.com", 0.0411),
    ("cdn.shopify.com", 0.0200),
    ("photos.smugmug.com", 0.0186),
    ("i.etsystatic.com", 0.0150),
    ("images.saatchiart.com", 0.0120),
    ("i0.wp.com", 0.0100),
    ("images.fineartamerica.com", 0.0090),
    ("ae01.alicdn.com", 0.0080),
    ("cdn11.bigcommerce.com", 0.0060),
    ("img.freepik.com", 0.0050),
    ("live.staticflickr.com", 0.0050),
    ("pbs.twimg.com", 0.0040),
    ("i.ytimg.com", 0.0030),
)
TAIL_DOMAIN_COUNT = 1_500

# URLs whose host part trips simple parsers: ports, user info, case, IPv6, no scheme, spaces.
ODD_URLS: tuple[str | None, ...] = (
    "https://I.PINIMG.COM/originals/ab/cd/ef.jpg",
    "http://example.com:8080/images/cat.jpg",
    "https://user:secret@photos.example.org/p/1.png",
    "http://[2001:db8::1]/img.jpg",
    "http://[2001:db8::1]:8443/img.jpg",
    "//cdn.schemeless.net/a/b.jpg",
    "www.noscheme.com/picture.jpg",
    "HTTPS://Mixed.Case.Example.COM/x.JPG",
    "  https://leading-space.example.com/y.jpg",
    "https://host.example.com?query=only",
    "https://host.example.com#fragment",
    "ftp://files.example.net/z.jpg",
    "data:image/png;base64,iVBORw0KGgo=",
    "",
    None,
)

# Caption words, most frequent first (captions pick them with Zipf-like weights).
_CAPTION_WORDS = """
    the a of and in with on for by at from to an portrait landscape painting photo print canvas
    wall art poster vintage modern abstract beautiful sunset mountain lake forest river ocean
    beach city street night light dark colorful watercolor oil acrylic digital illustration
    drawing sketch fantasy sci-fi concept character design dress wedding flowers rose garden
    house interior kitchen living room bedroom cat dog horse bird butterfly tree sky clouds
    winter summer autumn spring snow rain golden blue red green black white pink purple
    minimalist detailed highly cinematic lighting 4k 8k hd trending artstation unreal engine
    octane render matte framed stock image royalty free photograph woman man girl boy child
    family love happy old new large small
"""
WORDS: tuple[str, ...] = tuple(_CAPTION_WORDS.split())

ENTITY_TEMPLATES: tuple[str, ...] = (
    "painting by {name}",
    "{name} style {w1} {w2}",
    "{w1} {w2} inspired by {name}",
    "portrait of {name}, {w1} {w2}",
    "{name} {w1} poster",
    "art of {name} and {w1} {w2}",
)


def shard_names(count: int = FILE_COUNT) -> list[str]:
    """The dataset's file names, ``data/train-0000N-of-00007-<hash>.parquet``."""
    names = []
    for n in range(count):
        digest = KNOWN_SHARD_HASHES.get(n) or hashlib.sha256(f"shard-{n}".encode()).hexdigest()[:16]
        names.append(f"data/train-{n:05d}-of-{count:05d}-{digest}.parquet")
    return names


def read_names(csv_path: Path) -> list[str]:
    """The ``name`` column of an entity list CSV."""
    with csv_path.open(newline="", encoding="utf-8") as f:
        return [row["name"] for row in csv.DictReader(f) if row.get("name")]


def sample_entity_names() -> list[str]:
    """Every name of the bundled artist, celebrity and character lists."""
    return [
        name
        for kind in ("artists", "celebrities", "characters")
        for name in read_names(SAMPLE_DIR / f"{kind}.csv")
    ]


class _RowMaker:
    """Makes LAION-like rows from one seeded random stream."""

    def __init__(self, seed: int, names: Sequence[str]) -> None:
        self.rng = random.Random(seed)
        self.names = list(names)
        tail = [self._tail_domain(i) for i in range(TAIL_DOMAIN_COUNT)]
        head_share = sum(share for _, share in HEAD_DOMAINS)
        # A Zipf-like tail (weight 1/rank, ranks continuing after the head) shares what the
        # head leaves.
        tail_weights = [1.0 / (len(HEAD_DOMAINS) + rank + 1) for rank in range(len(tail))]
        scale = (1.0 - head_share) / sum(tail_weights)
        self.domains = [d for d, _ in HEAD_DOMAINS] + tail
        self.cum_weights = _cumulative(
            [share for _, share in HEAD_DOMAINS] + [w * scale for w in tail_weights]
        )
        self.word_cum_weights = _cumulative([1.0 / (rank + 1) for rank in range(len(WORDS))])
        self.index = 0

    def _tail_domain(self, i: int) -> str:
        words = [w for w in WORDS if len(w) > 3 and w.isalpha()]
        first, second = words[i % len(words)], words[(i * 7 + 3) % len(words)]
        prefix = ("www", "cdn", "images", "static", "img")[i % 5]
        tld = ("com", "net", "org", "co.uk", "de", "fr", "jp")[i % 7]
        return f"{prefix}.{first}{second}{i}.{tld}"

    def url(self) -> str | None:
        rng = self.rng
        if rng.random() < 0.01:
            return rng.choice(ODD_URLS)
        domain = rng.choices(self.domains, cum_weights=self.cum_weights)[0]
        scheme = "https" if rng.random() < 0.8 else "http"
        path = "/".join(f"{rng.getrandbits(32):08x}" for _ in range(rng.randint(1, 3)))
        return f"{scheme}://{domain}/{path}.{rng.choice(('jpg', 'jpeg', 'png', 'webp'))}"

    def caption(self) -> str | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.005:
            return None
        if roll < 0.008:
            return ""
        words = rng.choices(WORDS, cum_weights=self.word_cum_weights, k=rng.randint(3, 14))
        text = " ".join(words)
        if self.names and rng.random() < 0.25:
            name = rng.choice(self.names)
            if rng.random() < 0.2:
                name = name.lower()
            template = rng.choice(ENTITY_TEMPLATES)
            text = template.format(name=name, w1=words[0], w2=words[-1])
        return text[0].upper() + text[1:] if rng.random() < 0.5 else text

    def size(self) -> float | None:
        roll = self.rng.random()
        if roll < 0.01:
            return float("nan")
        if roll < 0.012:
            return None
        return float(self.rng.choice((256, 300, 400, 512, 600, 640, 768, 800, 1024, 1200, 1920)))

    def probability(self, skew: float) -> float | None:
        if self.rng.random() < 0.003:
            return None
        return self.rng.random() ** skew

    def rows(self, count: int) -> Iterator[dict]:
        rng = self.rng
        for _ in range(count):
            self.index += rng.randint(1, 40)
            yield {
                "URL": self.url(),
                "TEXT": self.caption(),
                "WIDTH": self.size(),
                "HEIGHT": self.size(),
                "similarity": round(rng.uniform(0.2, 0.45), 12),
                "punsafe": self.probability(6.0),
                "pwatermark": self.probability(3.0),
                "AESTHETIC_SCORE": round(rng.uniform(6.0, 8.2), 6),
                "hash": rng.getrandbits(64) - 2**63,
                "__index_level_0__": self.index,
            }


def _cumulative(weights: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def generate(
    out_dir: Path,
    rows: int,
    *,
    seed: int = 2022,
    names: Sequence[str] = (),
    files: int = FILE_COUNT,
    batch_rows: int = 100_000,
) -> list[Path]:
    """Write ``rows`` LAION-shaped rows split over ``files`` parquet files under ``out_dir``.

    The same arguments always give the same rows. Returns the written paths in file order.
    """
    maker = _RowMaker(seed, names)
    paths = []
    per_file = [rows // files + (1 if n < rows % files else 0) for n in range(files)]
    for name, count in zip(shard_names(files), per_file, strict=True):
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, LAION_ARROW_SCHEMA, compression="snappy") as writer:
            remaining = count
            while remaining:
                n = min(batch_rows, remaining)
                writer.write_table(pa.Table.from_pylist(list(maker.rows(n)), LAION_ARROW_SCHEMA))
                remaining -= n
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR, help="output folder")
    parser.add_argument("--rows", type=int, default=SAMPLE_ROWS, help="total rows to write")
    parser.add_argument("--seed", type=int, default=2022, help="random seed")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.rows, seed=args.seed, names=sample_entity_names()):
        print(path)


if __name__ == "__main__":
    main()

"""Deterministic LAION-shaped parquet files: the bundled sample and benchmark data.

The files have the real dataset's file names and exact column types, a domain mix with the
big hosts of the 2022 analysis on top and a long Zipf-like tail, captions that mention names
from the entity lists, and the nulls and odd URLs the real data has.

Regenerate the bundled sample (what ``laion_pipeline/sample_data`` holds) with::

    python -m benchmarks.synthetic --out laion_pipeline/sample_data
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from laion_pipeline.common.layout import SAMPLE_DIR
from laion_pipeline.common.schema import LAION_ARROW_SCHEMA

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


_SYLLABLES_TEXT = (
    "ka lo mi ra ten vo shi an el or us ix be da fu go hi ju ne pa qui ro su ti va we ya zo"
)
SYLLABLES = tuple(_SYLLABLES_TEXT.split())
TAIL_WORD_COUNT = 30_000
POOL_CAPTIONS = 200_000
SIZES = (256.0, 300.0, 400.0, 512.0, 600.0, 640.0, 768.0, 800.0, 1024.0, 1200.0, 1920.0)


def _pseudo_word(i: int) -> str:
    syllables = []
    i += len(SYLLABLES)  # at least two syllables
    while i:
        i, digit = divmod(i, len(SYLLABLES))
        syllables.append(SYLLABLES[digit])
    return "".join(syllables)


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


class _RowMaker:
    """Makes LAION-like rows from one seeded random stream, a batch at a time.

    Captions are drawn from a pool of generated captions (Zipf-like word frequencies over a
    30,000-word vocabulary, lognormal lengths with a median of 10 words, a quarter naming
    someone), so that millions of rows cost seconds, not minutes.
    """

    def __init__(self, seed: str, names: Sequence[str], rows: int, first_index: int = 0) -> None:
        self.rng = random.Random(seed)
        self.names = list(names)
        tail = [self._tail_domain(i) for i in range(TAIL_DOMAIN_COUNT)]
        head_share = sum(share for _, share in HEAD_DOMAINS)
        # A Zipf-like tail (weight 1/rank, ranks continuing after the head) shares what the
        # head leaves.
        tail_weights = [1.0 / (len(HEAD_DOMAINS) + rank + 1) for rank in range(len(tail))]
        scale = (1.0 - head_share) / sum(tail_weights)
        self.domains = [d for d, _ in HEAD_DOMAINS] + tail
        self.domain_weights = _cumulative(
            [share for _, share in HEAD_DOMAINS] + [w * scale for w in tail_weights]
        )
        self.vocabulary = list(WORDS) + [_pseudo_word(i) for i in range(TAIL_WORD_COUNT)]
        self.word_weights = _cumulative(
            [1.0 / (rank + 1) ** 1.07 for rank in range(len(self.vocabulary))]
        )
        pool_size = min(rows, max(10_000, rows // 10), POOL_CAPTIONS)
        self.pool = [self._caption() for _ in range(max(pool_size, 1))]
        self.index = first_index

    def _tail_domain(self, i: int) -> str:
        words = [w for w in WORDS if len(w) > 3 and w.isalpha()]
        first, second = words[i % len(words)], words[(i * 7 + 3) % len(words)]
        prefix = ("www", "cdn", "images", "static", "img")[i % 5]
        tld = ("com", "net", "org", "co.uk", "de", "fr", "jp")[i % 7]
        return f"{prefix}.{first}{second}{i}.{tld}"

    def _caption(self) -> str | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.005:
            return None
        if roll < 0.008:
            return ""
        length = min(max(int(rng.lognormvariate(2.3, 0.6)), 1), 60)
        words = rng.choices(self.vocabulary, cum_weights=self.word_weights, k=length)
        text = " ".join(words)
        if self.names and rng.random() < 0.25:
            name = rng.choice(self.names)
            if rng.random() < 0.2:
                name = name.lower()
            template = rng.choice(ENTITY_TEMPLATES)
            text = template.format(name=name, w1=words[0], w2=words[-1])
        return text[0].upper() + text[1:] if rng.random() < 0.5 else text

    def _url(self, domain: str, caption: str | None) -> str | None:
        rng = self.rng
        if rng.random() < 0.01:
            return rng.choice(ODD_URLS)
        slug = "-".join((caption or "image").lower().split()[:5])
        scheme = "https" if rng.random() < 0.8 else "http"
        return f"{scheme}://{domain}/{rng.getrandbits(40):010x}/{slug}.jpg"

    def _size(self) -> float | None:
        roll = self.rng.random()
        if roll < 0.01:
            return float("nan")
        if roll < 0.012:
            return None
        return self.rng.choice(SIZES)

    def _probability(self, skew: float) -> float | None:
        rng = self.rng
        return None if rng.random() < 0.003 else rng.random() ** skew

    def batch(self, count: int) -> pa.Table:
        rng, pool = self.rng, self.pool
        domains = rng.choices(self.domains, cum_weights=self.domain_weights, k=count)
        captions = [pool[int(rng.random() * len(pool))] for _ in range(count)]
        indexes = []
        for _ in range(count):
            self.index += rng.randint(1, 40)
            indexes.append(self.index)
        columns = {
            "URL": [self._url(d, c) for d, c in zip(domains, captions, strict=True)],
            "TEXT": captions,
            "WIDTH": [self._size() for _ in range(count)],
            "HEIGHT": [self._size() for _ in range(count)],
            "similarity": [round(rng.uniform(0.2, 0.45), 12) for _ in range(count)],
            "punsafe": [self._probability(6.0) for _ in range(count)],
            "pwatermark": [self._probability(3.0) for _ in range(count)],
            "AESTHETIC_SCORE": [round(rng.uniform(6.0, 8.2), 6) for _ in range(count)],
            "hash": [rng.getrandbits(64) - 2**63 for _ in range(count)],
            "__index_level_0__": indexes,
        }
        return pa.Table.from_pydict(columns, LAION_ARROW_SCHEMA)


def _write_file(
    path: Path, count: int, seed: str, names: Sequence[str], first_index: int, batch_rows: int
) -> Path:
    maker = _RowMaker(seed, names, count, first_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, LAION_ARROW_SCHEMA, compression="snappy") as writer:
        remaining = count
        while remaining:
            n = min(batch_rows, remaining)
            writer.write_table(maker.batch(n))
            remaining -= n
    return path


def generate(
    out_dir: Path,
    rows: int,
    *,
    seed: int = 2022,
    names: Sequence[str] = (),
    files: int = FILE_COUNT,
    batch_rows: int = 100_000,
    workers: int = 1,
) -> list[Path]:
    """Write ``rows`` LAION-shaped rows split over ``files`` parquet files under ``out_dir``.

    Each file has its own random stream, so the same arguments always give the same rows,
    whatever ``workers`` (processes writing files at once). Returns the paths in file order.
    """
    per_file = [rows // files + (1 if n < rows % files else 0) for n in range(files)]
    jobs = [
        (out_dir / name, count, f"{seed}:{n}", tuple(names), n * 10**9, batch_rows)
        for n, (name, count) in enumerate(zip(shard_names(files), per_file, strict=True))
    ]
    if workers <= 1:
        return [_write_file(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_write_file, *zip(*jobs, strict=True)))


# The shapes of today's datasets (the README's "Profiles"), made from the 2022 columns.
RELEASE_SHAPES = ("aesthetics-v2", "relaion2b-en", "laion2b-en-aesthetic")


def release_shaped(table: pa.Table, shape: str, seed: str) -> pa.Table:
    """A batch of 2022-shaped rows in the columns and types of another release: Spark's files
    of ``laion/aesthetics_v2_4.5`` (scores from 4.5, about 1% at 6 or more), Re-LAION 2B
    (``url``, ``caption``, the copy's and the original's sizes as int32, no scores) or
    ``laion/laion2B-en-aesthetic`` (the v1 ``aesthetic`` score)."""
    rng = random.Random(seed)
    n = table.num_rows
    if shape == "aesthetics-v2":
        # 4.5 plus an exponential tail: P(score >= 6) = exp(-1.5 * 3.07), about 1%.
        scores = [4.5 + rng.expovariate(3.07) for _ in range(n)]
        return pa.table(
            {
                "URL": table["URL"],
                "TEXT": table["TEXT"].cast(pa.large_string()),
                "WIDTH": table["WIDTH"],
                "HEIGHT": table["HEIGHT"],
                "similarity": table["similarity"],
                "punsafe": table["punsafe"],
                "pwatermark": table["pwatermark"],
                "AESTHETIC_SCORE": pa.array(scores, pa.float32()),
                "hash": table["hash"],
            }
        )
    if shape == "relaion2b-en":
        original = [None if w is None or w != w else int(w) for w in table["WIDTH"].to_pylist()]
        heights = [None if h is None or h != h else int(h) for h in table["HEIGHT"].to_pylist()]
        return pa.table(
            {
                "url": table["URL"],
                "caption": table["TEXT"].dictionary_encode(),
                "key": pa.array([f"{seed}-{i:09d}" for i in range(n)]),
                "status": pa.array(["success"] * n),
                "error_message": pa.nulls(n, pa.string()),
                "width": pa.array([min(w, 256) if w else w for w in original], pa.int32()),
                "height": pa.array([min(h, 256) if h else h for h in heights], pa.int32()),
                "original_width": pa.array(original, pa.int32()),
                "original_height": pa.array(heights, pa.int32()),
                "exif": pa.nulls(n, pa.string()),
                "md5": pa.array([f"{rng.getrandbits(128):032x}" for _ in range(n)]),
            }
        )
    if shape == "laion2b-en-aesthetic":
        return pa.table(
            {
                "URL": table["URL"],
                "TEXT": table["TEXT"],
                "WIDTH": table["WIDTH"],
                "HEIGHT": table["HEIGHT"],
                "similarity": table["similarity"],
                "hash": table["hash"],
                "punsafe": table["punsafe"].cast(pa.float64()),
                "pwatermark": table["pwatermark"].cast(pa.float64()),
                "aesthetic": pa.array([rng.uniform(3.0, 7.5) for _ in range(n)], pa.float64()),
            }
        )
    raise ValueError(f"unknown release shape {shape!r}: one of {', '.join(RELEASE_SHAPES)}")


def _write_part(path: Path, count: int, seed: str, names: Sequence[str], shape: str) -> Path:
    maker = _RowMaker(seed, names, count)
    table = release_shaped(maker.batch(count), shape, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy", row_group_size=100_000)
    # Spark writes a checksum file beside each part, and _SUCCESS when the job is done.
    path.with_name(f".{path.name}.crc").write_bytes(hashlib.sha1(path.read_bytes()).digest())
    return path


def generate_release(
    out_dir: Path,
    shape: str,
    rows: int,
    *,
    files: int = 4,
    seed: int = 2024,
    names: Sequence[str] = (),
    workers: int = 1,
) -> list[Path]:
    """Write ``rows`` rows shaped like ``shape`` as Spark part files
    (``part-0000N-<uuid>-c000.snappy.parquet``, a ``.crc`` beside each, and ``_SUCCESS``)."""
    per_file = [rows // files + (1 if n < rows % files else 0) for n in range(files)]
    run = hashlib.sha256(f"{shape}:{seed}".encode()).hexdigest()
    uuid = f"{run[:8]}-{run[8:12]}-{run[12:16]}-{run[16:20]}-{run[20:32]}"
    jobs = [
        (out_dir / f"part-{n:05d}-{uuid}-c000.snappy.parquet", count, f"{seed}:{n}", names, shape)
        for n, count in enumerate(per_file)
    ]
    if workers <= 1:
        paths = [_write_part(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            paths = list(pool.map(_write_part, *zip(*jobs, strict=True)))
    (out_dir / "_SUCCESS").write_bytes(b"")
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR, help="output folder")
    parser.add_argument("--rows", type=int, default=SAMPLE_ROWS, help="total rows to write")
    parser.add_argument("--seed", type=int, default=2022, help="random seed")
    parser.add_argument("--workers", type=int, default=1, help="processes writing files at once")
    args = parser.parse_args(argv)
    names = sample_entity_names()
    for path in generate(args.out, args.rows, seed=args.seed, names=names, workers=args.workers):
        print(path)


if __name__ == "__main__":
    main()

"""Issue 30, items 3, 5, 6 and 8 for the data files: hostile CSV, gzip and zip files
get one line naming the file, in bounded memory and without hanging.

Every hostile file is made here, in a temporary folder. Memory is checked with a
resource limit on the process that reads them, not by eye.
"""
import gzip
import io
import os
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from helpers import ROOT, sample_rows, tree_state, write_lines

from pipeline.engine import lock
from pipeline.errors import PipelineError
from pipeline.steps import ingest

TRAIN = sample_rows("train.csv.gz", 20)
ROW = ("1," + ",".join(["0"] * 784) + "\n").encode()
GB = 2**30
MEMORY_LIMIT = int(1.5 * GB)   # the bombs below expand to 4 GB; a capped read needs < 1 GB


def deflate_bomb(expanded: int, wbits: int, head: bytes = b"", unit: bytes = ROW) -> bytes:
    """A deflate stream (gzip with wbits=31, raw with -15) of `head` then `unit` repeated
    to about `expanded` bytes, made in milliseconds: each fully flushed block of the
    same 1 MB is the same bytes, so one block is compressed and then repeated. The
    stream's end (and a gzip's checksum) is left off: a capped reader never gets there."""
    block = unit * (2**20 // len(unit))
    pack = zlib.compressobj(9, zlib.DEFLATED, wbits)
    first = pack.compress(head + block) + pack.flush(zlib.Z_FULL_FLUSH)
    again = pack.compress(block) + pack.flush(zlib.Z_FULL_FLUSH)
    return first + again * (expanded // len(block))


def gzip_of_repeats(head: bytes, unit: bytes, expanded: int) -> bytes:
    """A whole gzip file of `head` then `unit` repeated to about `expanded` bytes, made
    as fast as `deflate_bomb`, with its end and checksum."""
    body = deflate_bomb(expanded, -15, head, unit)
    block = unit * (2**20 // len(unit))
    crc = zlib.crc32(block, zlib.crc32(head + block))
    for _ in range(expanded // len(block) - 1):
        crc = zlib.crc32(block, crc)
    size = len(head) + len(block) * (expanded // len(block) + 1)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()      # an empty final block
    return (b"\x1f\x8b\x08\0\0\0\0\0\0\xff" + body + end +
            struct.pack("<II", crc, size % 2**32))


def zip_of(name: str, data: bytes, method: int = zipfile.ZIP_STORED,
           declared: int | None = None, flags: int = 0) -> bytes:
    """A zip archive of one member holding `data` as it is, then patched to say it was
    compressed with `method`, unpacks to `declared` bytes, and has general-purpose
    `flags` (1: encrypted): what a crafted archive may claim."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(name, data)
    raw = bytearray(buf.getvalue())
    local, central = 0, raw.rindex(b"PK\x01\x02")
    for at, field in ((local, 6), (central, 8)):          # offsets of flags, method, size
        struct.pack_into("<HH", raw, at + field, flags, method)
        if declared is not None:
            struct.pack_into("<I", raw, at + field + 16, declared)
    return bytes(raw)


def read_limited(*paths: Path) -> list[str]:
    """Read each file with ingest in a fresh process whose address space is capped at
    MEMORY_LIMIT; one line per file: 'ok N', or the error's message."""
    script = (
        "import sys\n"
        "from pipeline.steps import ingest\n"
        "from pipeline.errors import PipelineError\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        images, _ = ingest.read_digits_csv(path, True)\n"
        "        print('ok', len(images))\n"
        "    except PipelineError as exc:\n"
        "        print(exc)\n"
        "    except MemoryError:\n"
        "        print('MemoryError')\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, *map(str, paths)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, preexec_fn=limit,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_bombs_are_refused_as_too_large_in_bounded_memory(tmp_path):
    header = (",".join(["label"] + [f"pixel{i}" for i in range(784)]) + "\n").encode()
    gz = tmp_path / "train.csv.gz"
    gz.write_bytes(deflate_bomb(4 * GB, 31, header))
    honest = tmp_path / "honest.zip"              # says 3 GB: refused before reading
    honest.write_bytes(zip_of("train.csv", deflate_bomb(2**22, -15, header),
                              zipfile.ZIP_DEFLATED, declared=3 * GB))
    liar = tmp_path / "liar.zip"                  # says 1 KB, holds 4 GB
    liar.write_bytes(zip_of("train.csv", deflate_bomb(4 * GB, -15, header),
                            zipfile.ZIP_DEFLATED, declared=1000))
    nested = tmp_path / "nested.zip"              # a zip holding the gzip bomb
    nested.write_bytes(zip_of("train.csv.gz", gz.read_bytes()))
    line = tmp_path / "line.csv.gz"               # one 300 MB line, under the size cap
    line.write_bytes(gzip_of_repeats(header, b"0,", 300 * 2**20))
    assert max(p.stat().st_size for p in (gz, honest, liar, nested, line)) < 20 * 2**20

    found = read_limited(gz, honest, liar, nested, line)
    too_large = "too large: expected a digits CSV of at most 512 MB once unpacked"
    assert found[0] == f"{gz}: {too_large} (MAX_CSV_BYTES in pipeline/steps/ingest.py), " \
                       "found more"
    assert found[1].startswith(f"{honest} (train.csv): {too_large}")
    assert found[2].startswith(f"{liar}: expected a zip archive, found a damaged one")
    assert found[3].startswith(f"{nested} (train.csv.gz): {too_large}")
    assert found[4] == (f"{line}, line 2: too long: expected a line of at most 64 KB (a digits "
                        "CSV line is a few KB), found more")


def test_a_bomb_through_the_command_line_is_one_line_and_leaves_outputs(tmp_path):
    gz = tmp_path / "train.csv.gz"
    gz.write_bytes(deflate_bomb(2 * GB, 31, b"label\n"))
    test = write_lines(tmp_path / "test.csv", [r.partition(",")[2] for r in TRAIN])
    out = tmp_path / "out"
    (out / "ingest").mkdir(parents=True)
    (out / ".records").mkdir()                   # an outputs folder of an earlier run
    (out / "ingest" / "keep.txt").write_text("mine")
    before = tree_state(out)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "ingest", f"--set=data.train={gz}",
         f"--set=data.test={test}", "--set=data.sample=null", f"--set=outputs={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, stdin=subprocess.DEVNULL,
        check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [(f"error: {gz}: too large: expected a digits "
                                                 "CSV of at most 512 MB once unpacked "
                                                 "(MAX_CSV_BYTES in pipeline/steps/ingest.py), "
                                                 "found more")]
    # All there was stays; the run's lock (empty now) is all it leaves.
    assert {k: v for k, v in tree_state(out).items() if k != lock.NAME} == before


def error(path: Path) -> str:
    with pytest.raises(PipelineError) as caught:
        ingest.read_digits_csv(path, True)
    return str(caught.value)


def test_a_long_line_in_a_small_file_is_named_by_its_line(tmp_path):
    path = write_lines(tmp_path / "train.csv", TRAIN[:3] + ["0," * 40000] + TRAIN[3:])
    assert error(path) == (f"{path}, line 4: too long: expected a line of at most 64 KB (a "
                           "digits CSV line is a few KB), found more")
    # A last line without its \n, and lines just under the cap, are still read.
    short = ",".join(["0"] * 785)
    path.write_bytes(("\n".join(TRAIN) + "\n" + short).encode())
    assert len(ingest.read_digits_csv(path, True)[0]) == len(TRAIN)


@pytest.mark.parametrize("flags, method, want", [
    (1, zipfile.ZIP_DEFLATED, (" (train.csv): expected an unencrypted zip member, found an "
                               "encrypted one (unzip it first)")),
    (0, 99, (": expected a zip archive compressed as deflate, bzip2 or lzma, found another "
             "method (That compression method is not supported)")),
])
def test_zip_members_zipfile_cannot_read_get_one_line(tmp_path, flags, method, want):
    path = tmp_path / "digit-recognizer.zip"
    path.write_bytes(zip_of("train.csv", zlib.compress(b"label\n"), method, flags=flags))
    assert error(path) == f"{path}{want}"


def test_a_truncated_gzip_inside_a_zip_gets_one_line(tmp_path):
    whole = gzip.compress("\n".join(TRAIN).encode())
    path = tmp_path / "digit-recognizer.zip"
    path.write_bytes(zip_of("train.csv.gz", whole[:len(whole) // 2]))
    assert error(path) == (f"{path} (train.csv.gz): expected a gzip file, found a damaged one "
                           "(it ends before its last block: truncated?)")


def test_special_files_get_one_line_without_hanging(tmp_path):
    fifo = tmp_path / "train.csv"
    os.mkfifo(fifo)                              # opening it would wait for a writer
    assert error(fifo) == f"{fifo}: expected a CSV file, found a named pipe (FIFO)"
    assert error(Path("/dev/zero")) == "/dev/zero: expected a CSV file, found a character device"


def test_names_from_files_are_printed_escaped(tmp_path):
    forged = "\x1b[2J\rerror: forged.csv"
    path = tmp_path / "digit-recognizer.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(forged, "label\n")
        archive.writestr("other.csv", "label\n")
    message = error(path)
    assert "\x1b" not in message and "\r" not in message
    assert message == (f"{path}: expected a zip archive holding train.csv, found "
                       "\\x1b[2J\\rerror: forged.csv, other.csv")
    header = TRAIN[0].replace("pixel5", "pixel5\x1b]0;title\x07")
    csv = write_lines(tmp_path / "train.csv", [header] + TRAIN[1:])
    assert error(csv) == (f"{csv}, line 1, column 7: expected 'pixel5', found "
                          "'pixel5\\x1b]0;title\\x07'")


@pytest.mark.parametrize("offset", [0, 1, 1000, ingest.MAX_LINE_BYTES // 2 - 1])
def test_the_line_check_finds_one_byte_too_many_wherever_the_line_starts(offset):
    cap = ingest.MAX_LINE_BYTES
    for length, refused in ((cap, False), (cap + 1, True)):
        raw = b"a\n" + b"x" * offset + b"\n" + b"y" * length + b"\nz\n"
        if refused:
            with pytest.raises(PipelineError, match="^f, line 3: too long"):
                ingest._check_line_lengths("f", raw)
            with pytest.raises(PipelineError, match="^f, line 1: too long"):
                ingest._check_line_lengths("f", b"y" * length)       # no line end at all
        else:
            ingest._check_line_lengths("f", raw)
            ingest._check_line_lengths("f", raw.rstrip(b"\nz"))        # the last line open


def test_a_zip_of_very_many_entries_is_refused_before_they_are_listed(tmp_path):
    path = tmp_path / "digit-recognizer.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(ingest.MAX_ZIP_ENTRIES + 1):
            archive.writestr(f"{i}.txt", "")
    assert error(path) == (f"{path}: too many files: expected a zip archive of a few files "
                           "(train.csv, test.csv), found about 1,001")

"""Multi-record bodies (byoc.serve.records): JSON Lines split line for line, tar / gzipped tar / zip
read member by member, every way a record or a body can be refused, and archive bombs refused
within bounded memory."""

from __future__ import annotations

import base64
import gzip
import io
import json
import stat
import struct
import tarfile
import tracemalloc
import zipfile
import zlib

import pytest

from byoc.serve import records
from byoc.serve.http_errors import BadRequest, NotAcceptable, PayloadTooLarge, RequestError
from byoc.serve.records import Kind, Limits

MB = 2**20
LIMITS = Limits.for_payload(6 * MB)
PNG = b"\x89PNG\r\n\x1a\n" + b"fake image bytes"  # records never decode images: the handler does


def line(data: bytes) -> bytes:
    return json.dumps({"b64": base64.b64encode(data).decode()}).encode()


def tar(*members: tuple[str, bytes] | tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))
    return buf.getvalue()


def special(name: str, kind: bytes, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def zipped(*members: tuple[str, bytes] | tuple[zipfile.ZipInfo, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buf.getvalue()


def split(kind: Kind, body: bytes, limits: Limits = LIMITS) -> list[records.Record]:
    return list(records.split(kind, body, limits))


def fake_submit(parts) -> list[tuple[int, bytes]]:
    """What the batcher would give: the handler's answer per image (here: its length, or a 400)."""
    out = []
    for image, headers in parts:
        assert headers == {"Content-Type": "application/x-image", "Accept": "application/json"}
        if image == b"not an image":
            out.append((400, b'{"error": "body is not an image Pillow can read", "status": 400}'))
        else:
            out.append((200, json.dumps({"predictions": [{"label": "x", "index": len(image), "score": 1.0}]}).encode()))
    return out


# ---- content types, Accept, top_k


@pytest.mark.parametrize(
    "content_type, kind",
    [
        ("application/jsonlines", Kind.JSON_LINES),
        ("Application/X-JSONLines; charset=utf-8", Kind.JSON_LINES),
        ("application/jsonl", Kind.JSON_LINES),
        ("application/x-tar", Kind.TAR),
        ("application/gzip", Kind.GZIP_TAR),
        ("application/x-gzip", Kind.GZIP_TAR),
        ("application/zip", Kind.ZIP),
        ("application/x-zip-compressed", Kind.ZIP),
        ("application/json", None),
        ("image/png", None),
        ("", None),
        (None, None),
    ],
)
def test_kind_of_content_types(content_type, kind):
    assert records.kind_of(content_type) is kind


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/*", "application/json", "text/html, */*;q=0.5"])
def test_accept_that_any_multi_record_response_satisfies(accept):
    for kind in Kind:
        records.check_accept(kind, accept)


def test_accept_the_response_type_only_where_it_is_the_response():
    for alias in ("application/jsonlines", "application/x-jsonlines", "application/jsonl"):
        records.check_accept(Kind.JSON_LINES, alias)
        with pytest.raises(NotAcceptable):
            records.check_accept(Kind.ZIP, alias)
    for accept in ("text/csv", "application/json;q=0", "image/png, text/plain"):
        with pytest.raises(NotAcceptable, match="response is application/jsonlines"):
            records.check_accept(Kind.JSON_LINES, accept)


TOP_K = [
    "top_k=3",
    "top_k = 2 ; x=1",
    "a=b,TOP_K=7",
    "",
    "nothing",
    "top_k=0",
    "top_k=-1",
    "top_k=x",
    "top_k",
    "top_k=",
]


@pytest.mark.parametrize("attributes", TOP_K)
def test_top_k_check_agrees_with_the_handlers_parser(attributes):
    """The front's stdlib check refuses exactly what byoc.serve.codec.parse_top_k refuses, with its message."""
    from byoc.serve import codec  # torch: fine in a test, never in the front

    try:
        codec.parse_top_k(attributes, 5, 10)
    except BadRequest as exc:
        with pytest.raises(BadRequest) as ours:
            records.check_top_k(attributes)
        assert ours.value.message == exc.message
    else:
        records.check_top_k(attributes)


# ---- JSON Lines


def test_json_lines_are_split_line_for_line_and_a_blank_line_is_a_record_of_its_own():
    body = b"\n" + line(b"one") + b"\r\n\r\n  \n" + line(b"two") + b"\n" + line(b"three") + b"\n"
    got = split(Kind.JSON_LINES, body)
    assert [(r.name, r.image) for r in got] == [
        ("line 1", b""),
        ("line 2", b"one"),
        ("line 3", b""),
        ("line 4", b""),
        ("line 5", b"two"),
        ("line 6", b"three"),  # the newline that ends the last line starts no line 7
    ]
    assert [r.error.message if r.error else None for r in got] == [
        "line 1: empty line",
        None,
        "line 3: empty line",
        "line 4: empty line",
        None,
        None,
    ]


@pytest.mark.parametrize("end", [b"", b"\n"])
def test_a_blank_line_in_the_middle_gets_its_error_line_and_later_answers_stay_on_their_lines(end):
    body = line(b"a") + b"\n\n" + line(b"ccc") + end
    _, answer = records.answer(body, {"Content-Type": "application/jsonlines"}, LIMITS, fake_submit)
    first, blank, third = (json.loads(x) for x in answer.split(b"\n"))
    assert first["predictions"][0]["index"] == 1 and third["predictions"][0]["index"] == 3
    assert blank == {"error": "line 2: empty line", "status": 400}


@pytest.mark.parametrize("body", [b"", b"\n", b"  \r\n"])
def test_a_request_of_one_blank_line_is_answered_with_one_error_line(body):
    """Batch transform with SplitType=Line and SingleRecord sends a blank input line as its own request."""
    sent = []
    content_type, answer = records.answer(
        body, {"Content-Type": "application/jsonlines"}, LIMITS, lambda parts: sent.extend(parts) or []
    )
    assert content_type == "application/jsonlines" and sent == []
    assert json.loads(answer) == {"error": "line 1: empty line", "status": 400} and b"\n" not in answer


BAD_LINES = {
    "not JSON": (b"{nope", "line 2: not valid JSON"),
    "not UTF-8": (b'{"b64": "\xff"}', "line 2: not valid JSON"),
    "not an object": (b'["aGk="]', "line 2: no 'b64' string"),
    "no b64": (b'{"image": "aGk="}', "line 2: no 'b64' string"),
    "b64 not a string": (b'{"b64": 3}', "line 2: no 'b64' string"),
    "a URL": (b'{"url": "http://example.com/x.png"}', "never fetches URLs"),
    "bad base64": (b'{"b64": "a$b"}', "line 2: b64 is not valid base64"),
    "empty b64": (b'{"b64": ""}', "line 2: b64 is empty"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_an_undecodable_line_is_its_own_error_and_its_neighbours_go_on(case):
    bad, message = BAD_LINES[case]
    body = line(b"first") + b"\n" + bad + b"\n" + line(b"third")
    content_type, answer = records.answer(body, {"Content-Type": "application/jsonlines"}, LIMITS, fake_submit)
    assert content_type == "application/jsonlines"
    lines = answer.split(b"\n")
    assert len(lines) == 3 and not answer.endswith(b"\n")
    first, error, third = (json.loads(x) for x in lines)
    assert first["predictions"][0]["index"] == len(b"first") and third["predictions"][0]["index"] == len(b"third")
    assert error["status"] == 400 and set(error) == {"error", "status"} and message in error["error"]


def test_json_lines_answer_has_one_line_per_record_in_order_and_no_trailing_newline():
    images = [b"a" * n for n in range(1, 8)] + [b"not an image"]
    body = b"\n".join(line(i) for i in images) + b"\n"
    _, answer = records.answer(body, {"Content-Type": "application/jsonlines"}, LIMITS, fake_submit)
    docs = [json.loads(x) for x in answer.split(b"\n")]
    assert [d["predictions"][0]["index"] for d in docs[:-1]] == list(range(1, 8))
    assert docs[-1] == {"error": "body is not an image Pillow can read", "status": 400}
    assert answer.count(b"\n") == len(images) - 1


def test_records_carry_the_clients_top_k_and_a_bad_one_refuses_the_whole_request():
    seen = []

    def submit(parts):
        seen.extend(headers for _, headers in parts)
        return [(200, b'{"predictions": []}')] * len(seen)

    headers = {"Content-Type": "application/jsonlines", "X-Amzn-SageMaker-Custom-Attributes": "top_k=2"}
    records.answer(line(b"x"), headers, LIMITS, submit)
    assert seen == [
        {
            "Content-Type": "application/x-image",
            "Accept": "application/json",
            **{"X-Amzn-SageMaker-Custom-Attributes": "top_k=2"},
        }
    ]
    with pytest.raises(BadRequest, match="top_k must be a positive integer"):
        records.answer(line(b"x"), {**headers, "X-Amzn-SageMaker-Custom-Attributes": "top_k=0"}, LIMITS, submit)
    with pytest.raises(NotAcceptable):
        records.answer(line(b"x"), {**headers, "Accept": "text/csv"}, LIMITS, submit)


def test_a_record_the_server_failed_fails_the_whole_request_so_it_is_retried():
    def submit(parts):
        answers = [(200, b'{"predictions": []}') for _ in parts]
        answers[1] = (503, b'{"error": "no model worker is available right now; retry shortly", "status": 503}')
        return answers

    body = b"\n".join(line(i) for i in (b"a", b"b", b"c"))
    with pytest.raises(RequestError) as raised:
        records.answer(body, {"Content-Type": "application/jsonlines"}, LIMITS, submit)
    assert raised.value.status == 503 and raised.value.message.startswith("line 2: no model worker")


def test_an_archive_without_records_is_400():
    body = tar(special("d", tarfile.DIRTYPE))
    with pytest.raises(BadRequest, match="holds no images"):
        records.answer(body, {"Content-Type": Kind.TAR.value[0]}, LIMITS, fake_submit)


def test_more_json_lines_than_the_limit_is_413_before_any_is_sent():
    body = b"\n".join([line(b"x")] * (records.MAX_RECORDS + 1))
    sent = []
    with pytest.raises(PayloadTooLarge, match=f"more than {records.MAX_RECORDS} lines"):
        records.answer(body, {"Content-Type": "application/jsonlines"}, LIMITS, lambda parts: sent.extend(parts))
    assert sent == []
    assert len(split(Kind.JSON_LINES, b"\n".join([line(b"x")] * records.MAX_RECORDS))) == records.MAX_RECORDS


# ---- archives


def test_tar_tgz_and_zip_are_answered_per_member_in_archive_order():
    members = [("b.png", PNG + b"1"), ("a/c.png", PNG + b"22"), ("broken.png", b"not an image")]
    bodies = {
        "application/x-tar": tar(special("a", tarfile.DIRTYPE), *members),
        "application/gzip": gzip.compress(tar(*members)),
        "application/zip": zipped(("a/", b""), *members),
        "application/x-zip-compressed": zipped(*members, method=zipfile.ZIP_STORED),
    }
    for content_type, body in bodies.items():
        got, answer = records.answer(body, {"Content-Type": content_type}, LIMITS, fake_submit)
        doc = json.loads(answer)
        assert got == "application/json" and list(doc) == ["b.png", "a/c.png", "broken.png"], content_type
        assert doc["b.png"]["predictions"][0]["index"] == len(PNG) + 1
        assert doc["a/c.png"]["predictions"][0]["index"] == len(PNG) + 2
        assert doc["broken.png"] == {"error": "body is not an image Pillow can read", "status": 400}


def test_tar_members_that_are_not_regular_files():
    body = tar(
        ("ok.png", PNG),
        special("link.png", tarfile.SYMTYPE, linkname="ok.png"),
        special("hard.png", tarfile.LNKTYPE, linkname="ok.png"),
        special("dev", tarfile.CHRTYPE, devmajor=1, devminor=3),
        special("fifo", tarfile.FIFOTYPE),
        special("dir", tarfile.DIRTYPE),
    )
    got = {r.name: r for r in split(Kind.TAR, body)}
    assert list(got) == ["ok.png", "link.png", "hard.png", "dev", "fifo"]  # directories are skipped
    assert got["ok.png"].image == PNG and got["ok.png"].error is None
    assert "is a link" in got["link.png"].error.message and "is a link" in got["hard.png"].error.message
    for name in ("dev", "fifo"):
        assert got[name].error.status == 400 and "not a regular file" in got[name].error.message


def test_zip_members_that_cannot_be_read_as_images():
    link = zipfile.ZipInfo("link.png")
    link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
    fifo = zipfile.ZipInfo("fifo")
    fifo.create_system, fifo.external_attr = 3, (stat.S_IFIFO | 0o644) << 16
    plain = zipfile.ZipInfo("plain.png")
    plain.create_system, plain.external_attr = 3, (stat.S_IFREG | 0o644) << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(plain, PNG)
        archive.writestr(link, "plain.png")
        archive.writestr(fifo, "")
        archive.writestr(zipfile.ZipInfo("packed.png"), PNG, compress_type=zipfile.ZIP_BZIP2)
    got = {r.name: r for r in split(Kind.ZIP, buf.getvalue())}
    assert got["plain.png"].image == PNG
    assert "symbolic link" in got["link.png"].error.message
    assert "not a regular file" in got["fifo"].error.message
    assert "method 12: only stored and deflate" in got["packed.png"].error.message


def test_an_archive_inside_an_archive_is_not_opened():
    inner_tar = tar(("x.png", PNG))
    nested = [
        ("inner.tar", inner_tar),
        ("inner.tgz", gzip.compress(inner_tar)),
        ("inner.zip", zipped(("x.png", PNG))),
        ("inner.bz2", b"BZh91AY&SY" + bytes(20)),
        ("inner.xz", b"\xfd7zXZ\x00" + bytes(20)),
        ("fine.png", PNG),
    ]
    for kind, body in [
        (Kind.TAR, tar(*nested)),
        (Kind.GZIP_TAR, gzip.compress(tar(*nested))),
        (Kind.ZIP, zipped(*nested)),
    ]:
        got = {r.name: r for r in split(kind, body)}
        assert got.pop("fine.png").image == PNG
        assert {name: r.error.message for name, r in got.items()} == {
            name: f"{name}: nested archives are not opened" for name, _ in nested[:-1]
        }, kind


def test_a_name_twice_is_400():
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = zipped(("a.png", PNG), ("a.png", PNG))
    for kind, body in [(Kind.TAR, tar(("a.png", PNG), ("a.png", PNG))), (Kind.ZIP, twice)]:
        with pytest.raises(BadRequest, match="'a.png' twice"):
            split(kind, body)


INVALID = {
    "tar: not a tar": (Kind.TAR, b"this is not a tar archive" * 40),
    "tar: empty": (Kind.TAR, b""),
    "tar: truncated member": (Kind.TAR, tar(("a.png", PNG * 100))[:700]),
    "gzip: not gzip": (Kind.GZIP_TAR, b"plain bytes, no gzip header"),
    "gzip: a gzipped non-tar": (Kind.GZIP_TAR, gzip.compress(b"an image, not a tar" * 40)),
    "gzip: truncated": (Kind.GZIP_TAR, gzip.compress(tar(("a.png", PNG)))[:-12]),
    "zip: not a zip": (Kind.ZIP, b"PK but not really a zip archive"),
    "zip: empty": (Kind.ZIP, b""),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_a_body_that_is_not_a_valid_archive_of_its_type_is_400(case):
    kind, body = INVALID[case]
    with pytest.raises(BadRequest) as exc:
        split(kind, body)
    assert exc.value.status == 400 and kind.label in exc.value.message or "gzip" in exc.value.message


def test_concatenated_gzip_members_and_zero_padding_are_one_stream():
    body = gzip.compress(tar(("a.png", PNG))[: 512 * 3]) + gzip.compress(tar(("a.png", PNG))[512 * 3 :]) + bytes(700)
    assert [(r.name, r.image) for r in split(Kind.GZIP_TAR, body)] == [("a.png", PNG)]


# ---- bombs


def test_a_member_declaring_more_than_the_payload_limit_is_413_before_it_is_read():
    info = tarfile.TarInfo("huge.png")
    info.size = 10 * 2**30  # 10 GiB declared; the body holds a few bytes of it
    body = info.tobuf(format=tarfile.GNU_FORMAT) + PNG
    for kind, data in [(Kind.TAR, body), (Kind.GZIP_TAR, gzip.compress(body))]:
        with pytest.raises(PayloadTooLarge, match="huge.png is 10737418240 bytes, over the limit of 6291456"):
            split(kind, data)


def test_more_members_than_the_limit_is_413():
    limits = Limits(record_bytes=MB, total_bytes=4 * MB, records=3, entries=6)
    files = [(f"{i}.png", PNG) for i in range(4)]
    for kind, body in [
        (Kind.TAR, tar(*files)),
        (Kind.GZIP_TAR, gzip.compress(tar(*files))),
        (Kind.ZIP, zipped(*files)),
    ]:
        with pytest.raises(PayloadTooLarge, match="more than 3 files"):
            split(kind, body, limits)
    dirs = [special(f"d{i}", tarfile.DIRTYPE) for i in range(7)]
    with pytest.raises(PayloadTooLarge, match="more than 6 entries"):
        split(Kind.TAR, tar(*dirs), limits)
    with pytest.raises(PayloadTooLarge, match="more than 6 entries"):  # counted before zipfile builds them
        split(Kind.ZIP, zipped(*[(f"d{i}/", b"") for i in range(7)]), limits)


def gzip_of_zeros(members: int, member_bytes: int) -> bytes:
    """A gzipped tar of `members` files of zeros, compressed as it is built (level 1: fast, ~220:1)."""
    out, pack = [], zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MB)
    for i in range(members):
        info = tarfile.TarInfo(f"zeros-{i}.png")
        info.size = member_bytes
        out.append(pack.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(member_bytes // MB):
            out.append(pack.compress(zeros))
    out.append(pack.compress(bytes(1024)) + pack.flush())
    return b"".join(out)


@pytest.fixture(scope="module")
def ratio_bomb() -> bytes:
    return gzip_of_zeros(members=16, member_bytes=16 * MB)  # 256 MiB of zeros in ~1.2 MB


def peak_while(call) -> tuple[int, object]:
    tracemalloc.start()
    try:
        result = call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, result


def test_a_high_ratio_gzip_is_413_in_memory_well_below_its_uncompressed_size(ratio_bomb):
    limits = Limits.for_payload(32 * MB)  # members of 16 MiB fit, 128 MiB in all would too
    peak, error = peak_while(lambda: pytest.raises(PayloadTooLarge, split, Kind.GZIP_TAR, ratio_bomb, limits))
    print(f"ratio bomb: {len(ratio_bomb)} bytes for 256 MiB; refused with a peak of {peak / MB:.1f} MiB traced")
    assert "expands more than 100:1" in error.value.message
    assert peak < 32 * MB  # 256 MiB uncompressed; refused once 8 MiB came out of ~80 KB


def test_an_archive_past_the_total_is_413_within_bounded_memory(ratio_bomb):
    limits = Limits(record_bytes=16 * MB, total_bytes=5 * MB)  # below RATIO_FLOOR: the total decides
    peak, error = peak_while(lambda: pytest.raises(PayloadTooLarge, split, Kind.GZIP_TAR, ratio_bomb, limits))
    assert "expands past 5242880 bytes" in error.value.message and peak < 16 * MB


def raw_zip(name: bytes, data: bytes, method: int, crc: int, declared: int, names: list[bytes] | None = None) -> bytes:
    """A zip whose central directory says what we like: one local header and its data, and an entry
    for each of `names` (default: `name`), all pointing at it and declaring `declared` bytes (several
    entries sharing one member's data: the overlapping-entries bomb)."""
    names = names or [name]
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), declared, len(name), 0)
    central = b"".join(
        struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data), declared, len(n), 0, 0, 0, 0, 0, 0
        )
        + n
        for n in names
    )
    start = len(local) + len(name) + len(data)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(names), len(names), len(central), start, 0)
    return local + name + data + central + end


def deflated(data: bytes) -> bytes:
    pack = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return pack.compress(data) + pack.flush()


@pytest.fixture(scope="module")
def zeros_100mb() -> bytes:
    return deflated(bytes(100 * MB))  # ~100 KB


def test_a_zip_declaring_a_huge_member_is_413_before_it_is_read(zeros_100mb):
    body = raw_zip(b"big.png", zeros_100mb, zipfile.ZIP_DEFLATED, zlib.crc32(bytes(100 * MB)), 100 * MB)
    peak, error = peak_while(lambda: pytest.raises(PayloadTooLarge, split, Kind.ZIP, body))
    assert "big.png is 104857600 bytes, over the limit" in error.value.message and peak < 4 * MB


def test_a_zip_lying_about_its_sizes_is_read_no_further_than_it_declares(zeros_100mb):
    # Declares 1000 bytes but its data inflates to 100 MiB: zipfile stops at 1000 and the CRC says so.
    body = raw_zip(b"liar.png", zeros_100mb, zipfile.ZIP_DEFLATED, 0x12345678, 1000)
    peak, got = peak_while(lambda: split(Kind.ZIP, body))
    [record] = got
    assert record.error is not None and "cannot be read" in record.error.message and "CRC" in record.error.message
    assert peak < 4 * MB
    # ... with the CRC of what it declares, it is 1000 bytes of zeros (for the handler to refuse).
    honest_crc = raw_zip(b"liar.png", zeros_100mb, zipfile.ZIP_DEFLATED, zlib.crc32(bytes(1000)), 1000)
    [record] = split(Kind.ZIP, honest_crc)
    assert record.image == bytes(1000)


def test_overlapping_zip_entries_are_refused_by_what_they_declare():
    five = deflated(bytes(5 * MB))
    crc = zlib.crc32(bytes(5 * MB))
    # 200 entries sharing one 5 MiB member's 5 KB of data declare 1 GB: refused before any is read.
    for names in ([b"a.png"] * 200, [b"%d.png" % i for i in range(200)]):
        body = raw_zip(names[0], five, zipfile.ZIP_DEFLATED, crc, 5 * MB, names=names)
        peak, error = peak_while(lambda body=body: pytest.raises(PayloadTooLarge, split, Kind.ZIP, body))
        assert "the archive declares past 25165824 bytes" in error.value.message and peak < 2 * MB
    # Fewer of them, within the total: the directory's sizes share one member's compressed bytes.
    body = raw_zip(b"0.png", five, zipfile.ZIP_DEFLATED, crc, 5 * MB, names=[b"%d.png" % i for i in range(3)])
    with pytest.raises(PayloadTooLarge, match="declares more than 100:1"):
        split(Kind.ZIP, body)
    # Under the ratio floor, the names are checked against each local header: only the first matches.
    small = deflated(bytes(MB))
    body = raw_zip(b"0.png", small, zipfile.ZIP_DEFLATED, zlib.crc32(bytes(MB)), MB, names=[b"0.png", b"1.png"])
    first, second = split(Kind.ZIP, body)
    assert first.image == bytes(MB) and "cannot be read" in second.error.message


def test_a_zip_of_zeros_is_refused_before_any_member_is_read():
    many = zipped(*[(f"{i}.png", bytes(5 * MB)) for i in range(8)])  # 40 MiB of zeros in ~40 KB
    records_seen = []
    peak, error = peak_while(
        lambda: pytest.raises(PayloadTooLarge, records_seen.extend, records.split(Kind.ZIP, many, LIMITS))
    )
    assert "the archive declares" in error.value.message and records_seen == [] and peak < 2 * MB

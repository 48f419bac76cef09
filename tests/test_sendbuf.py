"""net/sendbuf.py against the bytearray it replaces, under random operation sequences."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wgslirpy.net.sendbuf import SendBuffer

Op = tuple[str, int, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3000), st.integers(0, 255)),
        st.tuples(st.just("consume"), st.integers(0, 4000), st.just(0)),
        st.tuples(st.just("take"), st.integers(0, 5000), st.integers(0, 3000)),
        st.tuples(st.just("clear"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@given(ops)
def test_matches_a_bytearray(operations: list[Op]) -> None:
    buf = SendBuffer()
    model = bytearray()
    counter = 0
    for name, a, b in operations:
        if name == "append":
            data = bytes((counter + i) & 0xFF for i in range(a))
            counter += a
            buf.append(memoryview(data) if b & 1 else data)
            model += data
        elif name == "consume":
            buf.consume(a)
            del model[:a]
        elif name == "take":
            if not model:
                assert buf.take(0, 0) == b""
                continue
            off = a % len(model)
            n = min(b, len(model) - off)
            got = buf.take(off, n)
            assert type(got) is bytes and got == bytes(model[off : off + n])
        else:
            buf.clear()
            model.clear()
        assert len(buf) == len(model) and bool(buf) == bool(model)


def test_a_segment_inside_one_chunk_is_one_slice_and_across_chunks_a_join() -> None:
    buf = SendBuffer()
    buf.append(b"abcdef")
    buf.append(memoryview(b"ghij")[:3])  # a view of the host's read buffer is copied
    buf.append(b"")  # nothing stored
    assert len(buf) == 9
    assert buf.take(1, 3) == b"bcd" and buf.take(4, 4) == b"efgh" and buf.take(0, 9) == b"abcdefghi"
    buf.consume(7)
    assert len(buf) == 2 and buf.take(0, 2) == b"hi"
    buf.consume(5)  # more than is left: all of it
    assert not buf and len(buf) == 0
    buf.append(b"xy")
    assert buf.take(0, 2) == b"xy"

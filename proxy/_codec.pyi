"""Type stub of the compiled codec (ext/_codec.pyx); same API as ``proxy._pycodec``."""

from collections.abc import Callable, Sequence

from proxy._pycodec import Admitting
from proxy.frames import CloseCode, Event

Payload = bytes | bytearray | memoryview

class FrameDecoder:
    server_side: bool
    max_frame: int
    max_message: int
    reassembled: int
    def __init__(self, *, server_side: bool, max_frame: int = ..., max_message: int = ...) -> None: ...
    def feed(self, data: Payload) -> list[Event]: ...
    def relay(self, data: Payload, encoder: FrameEncoder, budget: int) -> tuple[bytes, int, list[Event]]: ...

class FrameEncoder:
    client_side: bool
    max_frame: int
    fragmented: int
    def __init__(self, *, client_side: bool, max_frame: int = ...) -> None: ...
    def message(self, opcode: int, payload: Payload, mask_key: bytes | None = None) -> bytes: ...
    def close(self, code: int | None = CloseCode.NORMAL, reason: str = "") -> bytes: ...
    def ping(self, payload: Payload = b"") -> bytes: ...
    def pong(self, payload: Payload = b"") -> bytes: ...

def monotonic() -> float: ...

class Tally:
    value: float
    def __init__(self) -> None: ...
    def inc(self, amount: float = ...) -> None: ...
    def dec(self, amount: float = ...) -> None: ...

class RelayPump:
    last_activity: float
    def __init__(
        self,
        decoder: FrameDecoder,
        encoder: FrameEncoder,
        write: Callable[[bytes], object],
        *,
        clock: Callable[[], float] | None = ...,
        admission: Admitting | None = ...,
        messages: Sequence[Tally] = ...,
        read_bytes: Tally | None = ...,
        written_bytes: Tally | None = ...,
    ) -> None: ...
    def feed(self, data: Payload) -> list[Event]: ...

"""Run the int8 MiniLM file's weights as int8: a small rewrite of its ONNX graph.

The pinned file stores every weight as int8 with float32 scales (per output
column for the 36 projection matrices, per row for the embedding tables), and
dequantises each with ``Cast`` + ``Mul``. onnxruntime folds those into float32
constants when a session starts: 90 MB of float32 weights built from 23 MB of
int8 ones, 0.2 s of work and a ~300 MiB process. This module rewrites the graph
before onnxruntime sees it:

- a projection ``MatMul(x, Mul(Cast(Wq), s))`` becomes ``MatMulNBits`` (bits 8,
  onnxruntime's ``com.microsoft`` domain) holding the very same int8 values
  (stored offset by 128, its default zero point) and scales, repeated over
  blocks of :data:`BLOCK_SIZE` along K. With ``accuracy_level`` 4 the kernel
  quantises each block of 16 activations of a row to int8 with its own scale;
  cosine to sessionctl 0.1's float32 run measures >= 0.9998 (docs/index.md);
- an embedding lookup ``Gather(Mul(Cast(Tq), s), ids)`` becomes
  ``Mul(Cast(Gather(Tq, ids)), Gather(s, ids))``: the same numbers, but only the
  looked-up rows are dequantised and the 30522-row table stays int8.

Nothing else changes. Only the protobuf wire format is needed (the ``onnx``
package is not a dependency): the model is split into fields, the graph's
nodes and initializers are decoded just enough to match the pattern, and
everything else is copied through byte for byte. The input is the hash-checked
pinned file, so a pattern that does not match is a bug, reported as an
:class:`~sessionctl.errors.EmbeddingError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sessionctl.errors import EmbeddingError

if TYPE_CHECKING:
    from collections.abc import Iterator

#: K elements per MatMulNBits block: the activation quantisation granularity.
#: 16 is the kernel's smallest; 32 and 128 measured no faster here and less exact.
BLOCK_SIZE = 16
#: MatMulNBits accuracy_level: 4 = int8 activations (0/1 run float32 and are
#: 2x slower than 0.1's folded float32 weights).
ACCURACY_LEVEL = 4

# ONNX TensorProto data types and AttributeProto types used here.
_FLOAT, _UINT8, _INT8 = 1, 2, 3
_ATTR_INT = 2
_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5

# Field numbers (onnx.proto3).
_MODEL_OPSET, _MODEL_GRAPH = 8, 7
_GRAPH_NODE, _GRAPH_INIT = 1, 5
_NODE_IN, _NODE_OUT, _NODE_NAME, _NODE_OP, _NODE_ATTR, _NODE_DOMAIN = 1, 2, 3, 4, 5, 7
_T_DIMS, _T_TYPE, _T_NAME, _T_RAW = 1, 2, 8, 9
_A_NAME, _A_I, _A_TYPE = 1, 3, 20
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2

MS_DOMAIN = "com.microsoft"


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview, memoryview]]:
    """(field number, wire type, value, the field's whole encoding) for each field."""
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == _WIRE_VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _WIRE_LEN:
            size, pos = _varint(buf, pos)
            value = buf[pos : pos + size]
            pos += size
        elif wire == _WIRE_I64:
            value = buf[pos : pos + 8]
            pos += 8
        elif wire == _WIRE_I32:
            value = buf[pos : pos + 4]
            pos += 4
        else:
            raise EmbeddingError(f"embedding model: unsupported protobuf wire type {wire}")
        if pos > end:
            raise EmbeddingError("embedding model: truncated protobuf")
        yield number, wire, value, buf[start:pos]


def _enc_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _len_field(number: int, data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return _enc_varint(number << 3 | _WIRE_LEN) + _enc_varint(len(raw)) + raw


def _int_field(number: int, value: int) -> bytes:
    return _enc_varint(number << 3 | _WIRE_VARINT) + _enc_varint(value)


def _int_attr(name: str, value: int) -> bytes:
    return _len_field(_A_NAME, name) + _int_field(_A_I, value) + _int_field(_A_TYPE, _ATTR_INT)


def _node(
    op: str,
    inputs: list[str],
    outputs: list[str],
    name: str,
    *,
    domain: str = "",
    attrs: list[bytes] | None = None,
) -> bytes:
    out = b"".join(_len_field(_NODE_IN, i) for i in inputs)
    out += b"".join(_len_field(_NODE_OUT, o) for o in outputs)
    out += _len_field(_NODE_NAME, name) + _len_field(_NODE_OP, op)
    out += b"".join(_len_field(_NODE_ATTR, a) for a in attrs or ())
    if domain:
        out += _len_field(_NODE_DOMAIN, domain)
    return _len_field(_GRAPH_NODE, out)


def _tensor(name: str, dims: tuple[int, ...], data_type: int, raw: bytes) -> bytes:
    out = b"".join(_int_field(_T_DIMS, d) for d in dims)
    out += _int_field(_T_TYPE, data_type) + _len_field(_T_NAME, name) + _len_field(_T_RAW, raw)
    return _len_field(_GRAPH_INIT, out)


@dataclass
class _Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    encoded: memoryview
    axis: int = 0

    @classmethod
    def parse(cls, body: memoryview, encoded: memoryview) -> _Node:
        node = cls("", "", [], [], encoded)
        for number, _wire, value, _enc in _fields(body):
            if not isinstance(value, memoryview):
                continue
            if number == _NODE_IN:
                node.inputs.append(bytes(value).decode())
            elif number == _NODE_OUT:
                node.outputs.append(bytes(value).decode())
            elif number == _NODE_OP:
                node.op = bytes(value).decode()
            elif number == _NODE_NAME:
                node.name = bytes(value).decode()
            elif number == _NODE_DOMAIN and len(value):
                node.op = f"{bytes(value).decode()}:{node.op}"
            elif number == _NODE_ATTR:
                attr = {n: v for n, _w, v, _e in _fields(value)}
                name = attr.get(_A_NAME)
                axis = attr.get(_A_I, 0)
                if (
                    isinstance(name, memoryview)
                    and bytes(name) == b"axis"
                    and isinstance(axis, int)
                ):
                    node.axis = axis - (1 << 64) if axis >> 63 else axis
        return node


@dataclass
class _Tensor:
    name: str
    data_type: int
    dims: tuple[int, ...]
    raw: memoryview | None
    encoded: memoryview

    @classmethod
    def parse(cls, body: memoryview, encoded: memoryview) -> _Tensor:
        name, data_type, dims, raw = "", 0, [], None
        for number, _wire, value, _enc in _fields(body):
            if number == _T_DIMS and isinstance(value, int):
                dims.append(value)
            elif number == _T_TYPE and isinstance(value, int):
                data_type = value
            elif number == _T_NAME and isinstance(value, memoryview):
                name = bytes(value).decode()
            elif number == _T_RAW and isinstance(value, memoryview):
                raw = value
        return cls(name, data_type, tuple(dims), raw, encoded)


@dataclass
class _Dequant:
    """``out = Mul(Cast(quant), scale)`` with both inputs initializers."""

    cast: _Node
    mul: _Node
    quant: _Tensor
    scale: _Tensor
    consumers: list[_Node] = field(default_factory=list)


def _scalar(inits: dict[str, _Tensor], name: str) -> float | None:
    tensor = inits.get(name)
    if tensor is None or tensor.data_type != _FLOAT or tensor.raw is None or len(tensor.raw) != 4:
        return None
    return float(memoryview(tensor.raw).cast("f")[0])


def _only_reader(readers: dict[str, list[_Node]], name: str, op: str) -> _Node | None:
    found = readers.get(name, [])
    return found[0] if len(found) == 1 and found[0].op == op else None


def _bias_add(
    name: str, n: int, readers: dict[str, list[_Node]], inits: dict[str, _Tensor]
) -> tuple[_Node, str] | None:
    """The ``Add(name, bias[n])`` that alone reads ``name``, and the bias's name."""
    add = _only_reader(readers, name, "Add")
    if add is None or len(add.inputs) != 2:
        return None
    other = add.inputs[1] if add.inputs[0] == name else add.inputs[0]
    bias = inits.get(other)
    if bias is None or bias.data_type != _FLOAT or bias.dims != (n,):
        return None
    return add, other


def _erf_gelu(
    div: _Node, readers: dict[str, list[_Node]], inits: dict[str, _Tensor], uses: dict[str, int]
) -> list[_Node] | None:
    """``x * (0.5 * (erf(x / sqrt 2) + 1))`` as exported: its five nodes, or None.

    ``com.microsoft.Gelu`` computes the same exact (erf) GELU in one pass.
    """
    if div.op != "Div" or len(div.inputs) != 2:
        return None
    x = div.inputs[0]
    root2 = _scalar(inits, div.inputs[1])
    if root2 is None or abs(root2 - 2**0.5) > 1e-6 or uses.get(x) != 2:
        return None
    erf = _only_reader(readers, div.outputs[0], "Erf")
    plus = _only_reader(readers, erf.outputs[0], "Add") if erf else None
    half = _only_reader(readers, plus.outputs[0], "Mul") if plus else None
    times = _only_reader(readers, half.outputs[0], "Mul") if half else None
    if erf is None or plus is None or half is None or times is None:
        return None
    one = [_scalar(inits, i) for i in plus.inputs if i != erf.outputs[0]]
    halves = [_scalar(inits, i) for i in half.inputs if i != plus.outputs[0]]
    if one != [1.0] or halves != [0.5] or sorted(times.inputs) != sorted([x, half.outputs[0]]):
        return None
    return [div, erf, plus, half, times]


def quantised_graph(model: bytes) -> bytes:
    """The model with its int8 weights run as int8 (see the module docstring)."""
    return b"".join(quantised_graph_pieces(model))


def quantised_graph_pieces(model: bytes) -> list[bytes | memoryview]:
    """:func:`quantised_graph` as pieces to write out in order (no 25 MB join)."""
    import numpy as np

    buf = memoryview(model)
    top = list(_fields(buf))
    graphs = [v for n, _w, v, _e in top if n == _MODEL_GRAPH and isinstance(v, memoryview)]
    if len(graphs) != 1:
        raise EmbeddingError("embedding model has no graph")
    nodes: list[_Node] = []
    inits: dict[str, _Tensor] = {}
    other: list[memoryview] = []
    for number, _wire, value, encoded in _fields(graphs[0]):
        if number == _GRAPH_NODE and isinstance(value, memoryview):
            nodes.append(_Node.parse(value, encoded))
        elif number == _GRAPH_INIT and isinstance(value, memoryview):
            tensor = _Tensor.parse(value, encoded)
            inits[tensor.name] = tensor
        else:
            other.append(encoded)

    producer = {out: node for node in nodes for out in node.outputs}
    uses: dict[str, int] = {}
    readers: dict[str, list[_Node]] = {}
    for node in nodes:
        for name in node.inputs:
            uses[name] = uses.get(name, 0) + 1
            readers.setdefault(name, []).append(node)
    chains: dict[str, _Dequant] = {}
    for node in nodes:
        if node.op != "Mul" or len(node.inputs) != 2:
            continue
        cast = producer.get(node.inputs[0])
        quant = inits.get(cast.inputs[0]) if cast is not None and cast.op == "Cast" else None
        scale = inits.get(node.inputs[1])
        if (
            cast is None
            or quant is None
            or scale is None
            or quant.data_type != _INT8
            or scale.data_type != _FLOAT
            or uses.get(cast.outputs[0]) != 1
            or quant.raw is None
            or scale.raw is None
        ):
            continue
        chains[node.outputs[0]] = _Dequant(cast, node, quant, scale)
    for node in nodes:
        for name in node.inputs:
            if name in chains:
                chains[name].consumers.append(node)

    replaced: dict[int, bytes] = {}  # id(node) -> its new encoding ("" drops it)
    added: list[bytes] = []
    dropped_inits: set[str] = set()
    matmuls = gathers = 0
    for out, chain in chains.items():
        q, s = chain.quant, chain.scale
        if len(chain.consumers) != 1:
            continue
        user = chain.consumers[0]
        assert q.raw is not None and s.raw is not None
        if user.op == "MatMul" and user.inputs[1] == out and len(q.dims) == 2:
            k, n = q.dims
            if s.dims != (1, n) or k % BLOCK_SIZE:
                continue
            weights = np.frombuffer(q.raw, dtype=np.int8).reshape(k, n)
            blocks = (weights.T.astype(np.int16) + 128).astype(np.uint8)
            scales = np.repeat(np.frombuffer(s.raw, dtype=np.float32), k // BLOCK_SIZE)
            bname, sname = f"{q.name}_nbits", f"{s.name}_nbits"
            added.append(_tensor(bname, (n, k // BLOCK_SIZE, BLOCK_SIZE), _UINT8, blocks.tobytes()))
            added.append(_tensor(sname, (n * (k // BLOCK_SIZE),), _FLOAT, scales.tobytes()))
            attrs = [
                _int_attr("K", k),
                _int_attr("N", n),
                _int_attr("bits", 8),
                _int_attr("block_size", BLOCK_SIZE),
                _int_attr("accuracy_level", ACCURACY_LEVEL),
            ]
            inputs, outputs = [user.inputs[0], bname, sname], user.outputs
            bias = _bias_add(user.outputs[0], n, readers, inits)
            if bias is not None:  # MatMulNBits adds it (input 5) in the same pass
                add, bias_name = bias
                inputs += ["", "", bias_name]
                outputs = add.outputs
                replaced[id(add)] = b""
            replaced[id(user)] = _node(
                "MatMulNBits",
                inputs,
                outputs,
                f"{user.name}_nbits",
                domain=MS_DOMAIN,
                attrs=attrs,
            )
            dropped_inits |= {q.name, s.name}
            matmuls += 1
        elif user.op == "Gather" and user.inputs[0] == out and user.axis == 0:
            if len(q.dims) != 2 or s.dims != (q.dims[0], 1):
                continue
            ids, result, base = user.inputs[1], user.outputs[0], user.name
            replaced[id(user)] = b"".join(
                (
                    _node(
                        "Gather",
                        [q.name, ids],
                        [f"{result}_q"],
                        f"{base}_q",
                        attrs=[_int_attr("axis", 0)],
                    ),
                    _node(
                        "Gather",
                        [s.name, ids],
                        [f"{result}_s"],
                        f"{base}_s",
                        attrs=[_int_attr("axis", 0)],
                    ),
                    _node(
                        "Cast",
                        [f"{result}_q"],
                        [f"{result}_f"],
                        f"{base}_f",
                        attrs=[_int_attr("to", _FLOAT)],
                    ),
                    _node("Mul", [f"{result}_f", f"{result}_s"], [result], base),
                )
            )
            gathers += 1
        else:
            continue
        replaced[id(chain.cast)] = b""
        replaced[id(chain.mul)] = b""
    if not matmuls or not gathers:
        raise EmbeddingError(
            f"embedding model: int8 weights not in the expected form "
            f"({matmuls} projections, {gathers} embedding tables matched)"
        )

    for node in nodes:
        gelu = _erf_gelu(node, readers, inits, uses)
        if gelu is not None:
            for part in gelu:
                replaced[id(part)] = b""
            replaced[id(gelu[-1])] = _node(
                "Gelu", [node.inputs[0]], gelu[-1].outputs, f"{node.name}_gelu", domain=MS_DOMAIN
            )
    pieces: list[bytes | memoryview] = [replaced.get(id(node), node.encoded) for node in nodes]
    pieces += other
    pieces += [t.encoded for name, t in inits.items() if name not in dropped_inits]
    pieces += added
    size = sum(len(p) for p in pieces)
    model_out: list[bytes | memoryview] = []
    for number, _wire, _value, encoded in top:
        if number == _MODEL_GRAPH:
            model_out.append(_enc_varint(_MODEL_GRAPH << 3 | _WIRE_LEN) + _enc_varint(size))
            model_out += pieces
        else:
            model_out.append(encoded)
    opset = _len_field(_OPSET_DOMAIN, MS_DOMAIN) + _int_field(_OPSET_VERSION, 1)
    model_out.append(_len_field(_MODEL_OPSET, opset))
    return model_out

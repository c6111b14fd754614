"""File formats facekit reads and writes: MXNet RecordIO and its face-dataset layout
(``train.rec``/``.idx``/``property``/``train.lst``), verification ``.bin`` pickles and
pairs lists, face embeddings (Parquet parts), escaped TSV, atomic files.

The names below are facekit's public formats API (plugins import them from here, never
from the submodules). They are loaded on first use (PEP 562 ``__getattr__``), so ``import
facekit.formats`` stays cheap. Names that would clash or read ambiguously at package level
carry their format's name: ``escape_tsv``/``unescape_tsv`` (``tsv``), ``inspect_rec``/
``format_rec_report`` (``rec_inspect``), ``verify_rec`` (``rec_verify``),
``detect_pairs_format`` (``pairs.detect_format``), ``REC_LAYOUTS`` (``facerec.LAYOUTS``),
``PAIR_FAIL`` (``pairs.FAIL``).
"""

from __future__ import annotations

from facekit._exports import lazy_exports

#: public name -> "submodule:attribute"
_EXPORTS = {
    # recordio: MXNet RecordIO framing, IRHeader records, .idx files
    "RecordIOError": "recordio:RecordIOError",
    "MAGIC": "recordio:MAGIC",
    "IRHeader": "recordio:IRHeader",
    "pack": "recordio:pack",
    "unpack": "recordio:unpack",
    "pack_header": "recordio:pack_header",
    "encode_record": "recordio:encode_record",
    "encode_records": "recordio:encode_records",
    "RecordIOWriter": "recordio:RecordIOWriter",
    "IndexedRecordIOWriter": "recordio:IndexedRecordIOWriter",
    "RecordIOReader": "recordio:RecordIOReader",
    "IndexedRecordIOReader": "recordio:IndexedRecordIOReader",
    # idx: the .idx text, parsed in blocks
    "load_idx": "idx:load_idx",
    "read_idx": "idx:read_idx",
    "format_idx": "recordio:format_idx",
    "build_index": "recordio:build_index",
    # facerec: the face-dataset layouts (insightface / plain, shard sets)
    "FaceRec": "facerec:FaceRec",
    "FaceRecPart": "facerec:FaceRecPart",
    "PartFiles": "facerec:PartFiles",
    "RecordIORecordSetError": "facerec:RecordIORecordSetError",
    "REC_LAYOUTS": "facerec:LAYOUTS",
    "MAX_CLASS": "facerec:MAX_CLASS",
    "class_id": "facerec:class_id",
    "lst_is_number": "lst:is_number",
    "find_parts": "facerec:find_parts",
    "shard_stem": "facerec:shard_stem",
    "class_id": "facerec:class_id",
    "label_of": "facerec:label_of",
    "read_property": "facerec:read_property",
    "image_hw": "facerec:image_hw",
    # embeddings: face embeddings as Parquet parts (the embeddings sink)
    "EmbeddingsWriter": "embeddings:EmbeddingsWriter",
    "Embeddings": "embeddings:Embeddings",
    "load_embeddings": "embeddings:load_embeddings",
    "iter_embeddings": "embeddings:iter_embeddings",
    "EMBEDDING_DTYPES": "embeddings:DTYPES",
    # lst: train.lst and landmark lines
    "lst_line": "lst:lst_line",
    "aligned_lst_line": "lst:aligned_lst_line",
    "landmark_line": "lst:landmark_line",
    "text_field": "lst:text_field",
    "LstNames": "lst:LstNames",
    "LstMismatch": "lst:LstMismatch",
    # evalbin: verification .bin pickles
    "DEFAULT_PROTOCOL": "evalbin:DEFAULT_PROTOCOL",
    "EvalBinError": "evalbin:EvalBinError",
    "load_bin": "evalbin:load_bin",
    "loads_bin": "evalbin:loads_bin",
    "save_bin": "evalbin:save_bin",
    "dumps_bin": "evalbin:dumps_bin",
    # pairs: verification pairs lists
    "Pair": "pairs:Pair",
    "PairsError": "pairs:PairsError",
    "PAIR_FAIL": "pairs:FAIL",
    "DROP_PAIR": "pairs:DROP_PAIR",
    "detect_pairs_format": "pairs:detect_format",
    "read_pairs": "pairs:read_pairs",
    "write_pairs": "pairs:write_pairs",
    "folder_pairs": "pairs:folder_pairs",
    "check_images": "pairs:check_images",
    "pair_identity": "pairs:pair_identity",
    "pair_required": "pairs:pair_required",
    "PairCollector": "pairs:PairCollector",
    "PairSourceParams": "pairs:PairSourceParams",
    # atomic: files replaced whole or not at all
    "MARKER": "atomic:MARKER",
    "AtomicFile": "atomic:AtomicFile",
    "atomic_write_bytes": "atomic:atomic_write_bytes",
    "atomic_write_text": "atomic:atomic_write_text",
    # tsv: escaped tab-separated fields
    "escape_tsv": "tsv:escape",
    "unescape_tsv": "tsv:unescape",
    # rec_inspect / rec_verify: the `facekit inspect` / `facekit verify` reports
    "inspect_rec": "rec_inspect:inspect",
    "format_rec_report": "rec_inspect:format_report",
    "verify_rec": "rec_verify:verify",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

"""File formats facekit reads and writes: MXNet RecordIO and its face-dataset layout
(``train.rec``/``.idx``/``property``/``train.lst``), verification ``.bin`` pickles and
pairs lists, escaped TSV, atomic files."""

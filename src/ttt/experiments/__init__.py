"""Experiments that test the paper's claims at CPU scale (docs/results.md): `mqar` (multi-query associative recall),
`ladder` (Table 1), `long_context` (loss by position), `report` (tables and figures), and the independent
linear-attention / delta-rule references in `mixers`. Each is a command: `python -m ttt.experiments.<name> --help`."""

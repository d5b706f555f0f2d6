"""MQAR: the generator (`data`), the Zoology-style model (`model`), one run (`train`) and the resumable grid
(`sweep`)."""

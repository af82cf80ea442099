"""Synthetic L3 CT phantoms with exact tissue masks, in independently designed families.

Family A (``family_a``: anatomy_a → render_a → scanner_a) is the demo's training family. Family B
(``family_b``: anatomy_b → render_b → scanner_b) is "another site": its own anatomy and scanner
models, written without A's code, so a model trained on A can be scored on B as an external test.
Both produce :class:`common.PhantomSlice` / :class:`common.PhantomVolume`; ``writer`` writes the
drop-in layout for either.
"""

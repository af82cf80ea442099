"""SMIT self-supervised pretraining (`sarco pretrain`): a Swin encoder learns from unlabeled CT.

Why: labeled L3 masks are scarce, unlabeled CT is plentiful. Following SMIT (Jiang et al.,
The-Veeraraghavan-Lab/SMIT), a student SMIT encoder sees block-masked crops and learns three
things at once: to reconstruct the masked voxels (L1), to match an EMA teacher's image-level
output on the *other* view (global self-distillation) and the teacher's patch tokens on the
masked positions of the *same* view (patch self-distillation). Only the student encoder is
exported (`encoder.pt`, the format `sarco train --pretrained` loads).

Modules: `config` (every hyper-parameter, official defaults), `data` (streaming crops),
`masking`, `model` (student/teacher network: encoder + mask token + heads), `heads`, `losses`,
`ema`, `trainer` (loop, checkpoints, DDP), `card` (card.json, loss curve).
Nothing here imports torch at package import time, so `sarco --help` stays fast.
"""

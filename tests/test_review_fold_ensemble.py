"""Fold-by-fold prediction: the averaged answer is nnU-Net's own ensemble, and each fold is kept."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # needs the tiny trained model (~40 s+ once per session on CPU)


def _two_fold_predictor(tiny_model):
    """The tiny model's predictor with a second, perturbed copy of its weights as another 'fold'."""
    import torch

    from sarco_nn.model_store import build_predictor, find_model
    from sarco_nn.workspace import Workspace

    model = find_model(Workspace(tiny_model.workspace))
    predictor = build_predictor(model, torch.device("cpu"), use_mirroring=False)
    generator = torch.Generator().manual_seed(0)
    base = predictor.list_of_parameters[0]
    other = {k: (v + 0.05 * v.float().std() * torch.randn(v.shape, generator=generator)).to(v.dtype)
             if v.is_floating_point() and v.numel() > 1 else v for k, v in base.items()}
    predictor.list_of_parameters = [base, other]
    return predictor


def _held_slice(tiny_model):
    import SimpleITK as sitk

    path = sorted((tiny_model.held / "images").iterdir())[0]
    image = sitk.ReadImage(str(path))
    ct = sitk.GetArrayFromImage(image).astype("float32")
    if ct.ndim == 2:
        ct = ct[None]
    return ct, list(image.GetSpacing())[::-1] if image.GetDimension() == 3 else [10.0, *image.GetSpacing()[::-1]]


def test_fold_by_fold_matches_nnunet_ensemble_and_keeps_each_fold(tiny_model):
    from sarco_nn.review.fold_ensemble import predict_folds

    predictor = _two_fold_predictor(tiny_model)
    ct, spacing = _held_slice(tiny_model)
    ct = ct[:1]
    props = {"spacing": spacing}
    expected = predictor.predict_single_npy_array(ct[None], props, None, None, False)
    result = predict_folds(predictor, ct[None], props)  # its cost: bench/qc_bench.py --fold-cost

    assert len(predictor.list_of_parameters) == 2  # restored
    assert result.fold_probabilities.shape[0] == 2
    assert result.segmentation.shape == expected.shape
    assert (result.segmentation == expected).mean() > 0.999
    p = result.muscle_probabilities()
    assert p.shape == (2, *expected.shape)
    assert np.abs(p[0] - p[1]).max() > 1e-3  # the folds' own answers survive the ensemble
    assert np.allclose(result.probabilities.sum(0), 1.0, atol=1e-4)

"""nnU-Net's fold ensemble, keeping each fold's probabilities (what fold disagreement needs).

nnU-Net's ``nnUNetPredictor.predict_logits_from_preprocessed_data`` runs every fold and returns
the mean of their logits: the folds' own answers are gone. Here the image is preprocessed once
(nnU-Net's ``PreprocessAdapterFromNpy``, as ``predict_single_npy_array`` does), each entry of
``predictor.list_of_parameters`` is run on its own through that same public method, and each
fold's logits and their mean are resampled back with nnU-Net's
``convert_predicted_logits_to_segmentation_with_correct_shape``. The averaged result is therefore
nnU-Net's ensemble exactly (mean logits → softmax → argmax); the extra cost is one softmax and
resampling per fold (measured in tests/test_review_fold_ensemble.py and the report).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FoldPrediction", "predict_folds", "preprocess"]


@dataclass
class FoldPrediction:
    """Per-fold and averaged output on the input grid.

    fold_probabilities: (F, C, *spatial) softmax of each fold, float32.
    probabilities: (C, *spatial) softmax of the mean logits (nnU-Net's ensemble).
    segmentation: (*spatial) argmax labels of the ensemble, uint8 (as predict_single_npy_array).
    """

    fold_probabilities: np.ndarray
    probabilities: np.ndarray
    segmentation: np.ndarray

    def muscle_probabilities(self, label: int = 1) -> np.ndarray:
        """(F, *spatial) probability of one label per fold: the input of the quality score."""
        return self.fold_probabilities[:, label]


def preprocess(predictor, image: np.ndarray, properties: dict) -> dict:
    """nnU-Net's preprocessing of one image (``PreprocessAdapterFromNpy``, as ``predict_single_npy_array``).

    Separate from the network so `sarco predict --io-workers N` can run it for the next case in a
    reader thread: it only reads the predictor's plans, never its weights."""
    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy

    adapter = PreprocessAdapterFromNpy([image], [None], [properties], [None], predictor.plans_manager,
                                       predictor.dataset_json, predictor.configuration_manager,
                                       num_threads_in_multithreaded=1, verbose=False)
    return next(adapter)


def predict_folds(predictor, image: np.ndarray, properties: dict, preprocessed: dict | None = None) -> FoldPrediction:
    """Run every fold of an initialised ``nnUNetPredictor`` on one image, keeping each fold.

    Args:
        predictor: initialised nnUNetPredictor (``build_predictor`` or
            ``initialize_from_trained_model_folder``); its ``list_of_parameters`` holds the folds.
        image: (channels, z, y, x) float array, as for ``predict_single_npy_array``.
        properties: ``{"spacing": [sz, sy, sx]}``.
        preprocessed: `preprocess` of this image and properties, when already done (else done here).
    """
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    item = preprocessed if preprocessed is not None else preprocess(predictor, image, properties)
    folds = list(predictor.list_of_parameters)

    def to_grid(logits):
        seg, prob = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager,
            item["data_properties"], return_probabilities=True)
        return np.asarray(seg), np.asarray(prob, dtype=np.float32)

    fold_logits = []
    try:
        for params in folds:
            predictor.list_of_parameters = [params]
            fold_logits.append(predictor.predict_logits_from_preprocessed_data(item["data"]).cpu())
    finally:
        predictor.list_of_parameters = folds
    mean_logits = torch.stack(fold_logits).mean(0)
    segmentation, probabilities = to_grid(mean_logits)
    fold_probabilities = np.stack([to_grid(lg)[1] for lg in fold_logits])
    return FoldPrediction(fold_probabilities, probabilities, segmentation.astype(np.uint8))

"""The published figures our results are compared with, one place for all papers (cited by short name).

Same methods, other data, models and sizes: reports put these beside ours to compare trends.
"""

# Utility: (paper, scheme, params, metric, value). Paper NB, Table I: coronary angiography RCA/LCA at
# 128x128, test accuracy (its SSIM/PSNR are for one example frame). Paper LE, Tables 2-3: brain-tumour MRI,
# DenseNet-121 at 256x256, F1 (block=1 is SKK). Paper SD, Table 3: CIFAR-10 de-identified to 224x224 from
# the input size given, Inception-ResNet-v2, accuracy (no plain baseline given).
UTILITY = [
    ("NB", "plain", "", "accuracy", 0.9473),
    ("NB", "intensity", "levels=256", "accuracy", 0.8348),
    ("NB", "intensity", "levels=150", "accuracy", 0.8447),
    ("NB", "intensity", "levels=50", "accuracy", 0.8405),
    ("NB", "intensity", "levels=45", "accuracy", 0.7977),
    ("NB", "intensity", "levels=256", "ssim", 0.0109),
    ("NB", "intensity", "levels=150", "ssim", 0.0368),
    ("NB", "intensity", "levels=50", "ssim", 0.0940),
    ("NB", "intensity", "levels=45", "ssim", 0.0147),
    ("LE", "plain", "", "f1", 0.9836),
    ("LE", "skk", "", "f1", 0.9336),
    ("LE", "skk-smooth", "block=1", "f1", 0.9336),
    ("LE", "skk-smooth", "block=3", "f1", 0.9097),
    ("LE", "skk-smooth", "block=4", "f1", 0.8930),
    ("LE", "skk-smooth", "block=5", "f1", 0.8685),
    ("SD", "structural", "size=32", "accuracy", 0.8126),
    ("SD", "structural", "size=50", "accuracy", 0.8710),
    ("SD", "structural", "size=64", "accuracy", 0.8748),
]

# Paper NB, Table II: learned U-Net reconstruction, averaged over its test set, by key parameters.
NB_RECONSTRUCTION = {"levels=256": {"ssim": 0.676, "psnr": 18.11}, "levels=50": {"ssim": 0.608, "psnr": 12.45}}

# Paper PN, Table 3 (PPMI, Dice overall / GM / WM / CSF internal / external) and Table 2 (re-identification),
# by λ, quoted as printed.
PN_DICE = {"plain": (0.848, 0.941, 0.853, "0.665 / 0.825"), "1": (0.812, 0.925, 0.824, "0.598 / 0.752"),
           "3": (0.778, 0.899, 0.793, "0.550 / 0.693"), "10": (0.771, 0.881, 0.796, "0.531 / 0.685")}
PN_REIDENTIFICATION = {"plain": "0.970 / – / 0.953 / 0.850", "1": "0.564, 0.520, 0.598", "3": "0.533, 0.537, 0.615",
                       "10": "0.510, 0.523, 0.577"}

# Paper SD, Table 2 (CIFAR-10, 10,000 test images, output 224×224, α = 0.5): input size -> SDIM.
SD_SDIM = {32: 0.00170, 36: -0.02860, 42: -0.07035, 46: -0.11305, 48: -0.12955, 50: -0.14175,
           52: -0.13635, 54: -0.12900, 58: -0.13925, 62: -0.11015, 64: -0.10495, 75: -0.12190, 100: -0.04995}

# Paper PN, Table 4 (MRBrainS, three classes; encoder and segmenter trained on PPMI): GM / WM / CSF / overall,
# without and with retraining the segmenter on the new site's encoded images, by λ.
PN_TRANSFER = {"fixed": {"1": (0.768, 0.822, 0.804, 0.796), "3": (0.767, 0.852, 0.798, 0.804),
                         "10": (0.757, 0.798, 0.768, 0.772)},
               "retrained": {"1": (0.819, 0.827, 0.823, 0.821), "3": (0.794, 0.807, 0.831, 0.814),
                             "10": (0.780, 0.747, 0.797, 0.790)}}
# Paper PN, Table 5 (PPMI test images degraded, encoder trained at λ = 1 on clean images): overall Dice.
# Its "low res." is 2×2×2 (printed as cm³; from 1 mm images we read it as a halved resolution).
PN_ROBUSTNESS = {"noise 15 dB": 0.808, "noise 10 dB": 0.797, "half resolution": 0.759}

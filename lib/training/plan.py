"""One compute plan: every fit the series trains, declared once, per notebook and arm.

    python -m lib.plan --profile cpu [--dataset D ...]            # stored / missing + estimate
    python -m lib.plan --profile cpu --train [--dataset D] [--jobs 2]   (lib.training.runner)

Notebooks ask for their arms here (`plan.arm(P, DATASET, "01.small_cnn")`) and get the fits
from the store (`lib.training.store`), so an arm two notebooks share is trained once. Recipes are per
model family: native input (48 px grayscale for the grayscale datasets, RGB at
`P.backbone_size` for ImageNet backbones), a cosine schedule over `P.max_epochs` with early
stopping on validation macro-F1 (`P.patience`), never a cut-short budget.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from lib import config
from lib.training.store import FitSpec

# grayscale datasets train at their native 48 px, one channel (fer2013 is 48 px gray; the
# others are mostly gray faces): 1.8x less compute than 64 px RGB for the same accuracy
NATIVE_GRAY = ("fer2013", "facial_expressions", "ckplus48")
SMALL_CNNS = ("small_cnn", "wider_cnn", "conv4net", "vgg_cnn")
BACKBONES = ("mobilenet_v2", "resnet18", "efficientnet_b0", "convnextv2_tiny", "inception_v3",
             "vit_small")
# training sets of more than 5,000 images (fer2013 28,709; facial_expressions about 9,600)
# get the profile's `large_epochs` cap
LARGE = ("fer2013", "facial_expressions")
IMAGENET_OFFLINE = ("mobilenet_v2",)  # ImageNet weights that install offline (lib.models.weights)
# backbones the gpu profile trains and the cpu plan leaves out, and why (printed by the CLI)
GPU_ONLY = {
    "inception_v3": "299 px with its auxiliary head trains 1.9 images/s on one thread (measured; "
                    "MobileNetV2 at 112 px: 32): about 100 h per fer2013 fit; planned on "
                    "six_emotions only (study 002's dataset, about 5 h)",
    "vit_small": "no ImageNet weights offline; a ViT from scratch is left to the gpu profile",
    "convnextv2_tiny": "ImageNet weights not available offline; 28M parameters from scratch",
    "efficientnet_b0": "its torchvision ImageNet weights are not available offline",
    "ddamfn": "3 images/s at 112 px with SAM on one thread (measured): about 66 h per fer2013 "
              "fit; planned on six_emotions only (one seed, about 3 h)",
}
INCEPTION_DATASETS = ("six_emotions",)  # where the cpu plan affords Inception-V3 (one seed)
# training images per second on one thread of the 2-core dev machine (lib.bench train),
# used until the store has measured fits of a model
DEFAULT_IPS = {"small_cnn": 300.0, "wider_cnn": 160.0, "conv4net": 100.0, "vgg_cnn": 130.0,
               "mobilenet_v2": 40.0, "resnet18": 25.0, "inception_v3": 1.9,
               "ddamfn": 3.0, "convnextv2_atto": 44.0}


@dataclass(frozen=True)
class Arm:
    """One arm of a notebook: its fits (one per seed) and why it has that many seeds."""

    notebook: str
    name: str
    specs: tuple[FitSpec, ...]
    note: str = ""

    @property
    def section(self) -> str:
        """'capacity' for '03.conv4net'; 'sweep', 'cv', 'imbalance' ... for '03.sweep.x=1'."""
        parts = self.name.split(".")
        return parts[1].split("_seeds")[0] if len(parts) > 2 else \
            ("capacity" if self.notebook == "03_capacity" else parts[1])


def input_for(P: config.Profile, dataset: str, model: str) -> tuple[int, int]:
    """(img_size, channels) a model trains at on a dataset."""
    if model in SMALL_CNNS:
        return (48, 1) if dataset in NATIVE_GRAY else (P.img_size, 3)
    return P.backbone_size, 3


def recipe(P: config.Profile, dataset: str, model: str, study: str = "common") -> dict:
    """train.Config fields of a fit. `study`:
    'study000': study 000's baseline (AdamW 1e-3, weight decay 1e-4, class-weighted CE with
    label smoothing 0.05, no augmentation); 'common': the capacity study's shared recipe,
    study 000's plus augmentation (integer shift + flip at 48 px, crop/flip/rotate/jitter
    on RGB photos) and, for ImageNet-initialised backbones, half the learning rate."""
    epochs = P.large_epochs if dataset in LARGE and P.large_epochs else P.max_epochs
    base = dict(epochs=epochs, lr=1e-3, weight_decay=1e-4, loss="ce", label_smoothing=0.05,
                class_weights="balanced", patience=P.patience, batch_size=P.batch_size,
                schedule="cosine", augment="none")
    if study == "study000":
        return base
    if study != "common":
        raise ValueError(f"unknown recipe {study!r}")
    gray_small = model in SMALL_CNNS and dataset in NATIVE_GRAY
    base["augment"] = "shift" if gray_small else "standard"
    if P.pretrained and model in IMAGENET_OFFLINE:
        base["lr"] = 5e-4  # fine-tuning: full lr 1e-3 undoes the ImageNet features at first
    return base


def _specs(P, dataset, model, seeds, study="common", changes=None, **kw) -> tuple[FitSpec, ...]:
    size, ch = input_for(P, dataset, model)
    pre = bool(P.pretrained and model in IMAGENET_OFFLINE)
    r = {**recipe(P, dataset, model, study), **(changes or {})}
    return tuple(FitSpec(model, r, s, size, ch, pretrained=pre, **kw) for s in seeds)


# 03's studies (sweeps, CV, imbalance) on a large dataset train on a fixed stratified
# subset of this many images (all of a smaller set), each fit still to convergence
STUDY_IMAGES = 6000
# study 004's sweeps, one factor at a time around its final setting (64 filters, 3x3,
# dropout 0.2); every point is judged on validation
SWEEP = {"filters": (16, 32, 64), "kernel_size": (3, 5), "dropout": (0.0, 0.2, 0.5)}
SWEEP_DEFAULT = {"filters": 64, "kernel_size": 3, "dropout": 0.2}
# study 003's remedies, each changing one thing of plain cross-entropy (no class weights, no
# label smoothing, no augmentation): (recipe changes, training subset)
PLAIN = {"label_smoothing": 0.0, "class_weights": None, "augment": "none"}
IMBALANCE = {
    "plain_ce": ({}, None), "undersample": ({}, "undersample"), "oversample": ({}, "oversample"),
    "augment_to_balance": ({"sampler": "balanced", "augment": "standard"}, None),
    "class_weights": ({"class_weights": "balanced"}, None),
    "balanced_sampler": ({"sampler": "balanced"}, None),
    "focal": ({"loss": "focal"}, None), "soft_f1": ({"loss": "soft_f1"}, None),
    "logit_adjusted": ({"loss": "logit_adjusted"}, None),
}
# remedies a seed study reported on a dataset (study 003's augmenting to 3,000 a class on
# facial_expressions): they get the remaining seeds too, so their comparison has a spread
STUDY_REMEDIES = {"facial_expressions": ("augment_to_balance",)}


def _study_subset(dataset: str, extra: str | None = None) -> str:
    parts = ([f"stratified:{STUDY_IMAGES}"] if dataset in LARGE else []) + ([extra] if extra else [])
    return "+".join(parts) or "all"


def _study_recipe(P, dataset: str, model: str, study: str = "common") -> dict:
    """A 03 study fit's recipe: the subset is small, so the small-set epoch cap."""
    return {**recipe(P, dataset, model, study), "epochs": P.max_epochs}


def study_arms(P: config.Profile, dataset: str) -> list[Arm]:
    """03's sweeps, 3-fold CV and imbalance remedies. The imbalance contrast (plain CE and
    the remedy best on validation, over the remaining seeds) appears once every remedy's
    first fit is stored, since which remedy is best is read from them; a remedy a seed study
    reported on the dataset (STUDY_REMEDIES) gets its remaining seeds with it."""
    one, rest = tuple(P.seeds[:1]), tuple(P.seeds[1:])
    out, seen = [], set()
    for factor, values in SWEEP.items():
        for v in values:
            kw = {**SWEEP_DEFAULT, factor: v}
            # only what differs from Conv4Net's defaults (= study 004's final setting), so the
            # default point is the capacity fit itself where the data and epochs are the same
            diff = {k: x for k, x in kw.items() if SWEEP_DEFAULT[k] != x}
            spec = _specs(P, dataset, "conv4net", one, changes=_study_recipe(P, dataset, "conv4net"),
                          model_kw=diff, subset=_study_subset(dataset))
            name = f"03.sweep.{factor}={v}"
            if tuple(sorted(kw.items())) in seen:
                out.append(Arm("03_capacity", name, spec, "the default point, shared by the factors"))
                continue
            seen.add(tuple(sorted(kw.items())))
            out.append(Arm("03_capacity", name, spec, "one seed per sweep point (validation only)"))
    for k in range(3):
        cv = {**_study_recipe(P, dataset, "conv4net"), "patience": None}
        out.append(Arm("03_capacity", f"03.cv.fold{k}",
                       _specs(P, dataset, "conv4net", one, changes=cv,
                              subset=_study_subset(dataset, f"cv3:{k}")),
                       "study 004's final setting, fold k held out (no early stopping)"))
    imb = {}
    for name, (changes, extra) in IMBALANCE.items():
        r = {**_study_recipe(P, dataset, "small_cnn", "study000"), **PLAIN, **changes}
        imb[name] = (r, _study_subset(dataset, extra))
        out.append(Arm("03_capacity", f"03.imbalance.{name}",
                       _specs(P, dataset, "small_cnn", one, changes=r, subset=imb[name][1]),
                       "one seed: the remedy is chosen on validation"))
    best = best_remedy(P, dataset, imb)
    if best and rest:
        for name in dict.fromkeys(("plain_ce", best, *STUDY_REMEDIES.get(dataset, ()))):
            r, sub = imb[name]
            why = f"the remaining seeds of plain CE and of {best}, best on validation" \
                if name in ("plain_ce", best) else "the remaining seeds of a remedy a seed study reported"
            out.append(Arm("03_capacity", f"03.imbalance_seeds.{name}",
                           _specs(P, dataset, "small_cnn", rest, changes=r, subset=sub), why))
    return out


def best_remedy(P: config.Profile, dataset: str, imb: dict) -> str | None:
    """The remedy (not plain CE) with the best validation macro-F1 among the stored first
    fits, or None while any of them is missing."""
    from lib.training import store

    scores = {}
    for name, (r, sub) in imb.items():
        spec = _specs(P, dataset, "small_cnn", P.seeds[:1], changes=r, subset=sub)[0]
        meta = store.find(P.name, dataset, spec)
        if meta is None:
            return None
        scores[name] = meta["attrs"]["best_val_macro_f1"]
    scores.pop("plain_ce")
    return max(scores, key=scores.get)


# 02: study 000's SmallCNN and recipe with only the augmentation changed
AUG_POLICIES = ("none", "standard", "strong")
AUG_STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0)  # of the standard policy; 0 is no augmentation
AUG_SINGLE = ("flip", "rotate")  # study 004's single transforms


def _aug(policy: str, strength: float = 1.0) -> dict:
    """Recipe changes of one augmentation setting; strength 0 is no augmentation at all and
    the default strength is left out, so equal settings are equal specs (one shared fit)."""
    if strength == 0 or policy == "none":
        return {"augment": "none"}
    return {"augment": policy, **({"augment_strength": float(strength)} if strength != 1 else {})}


def augmentation_arms(P: config.Profile, dataset: str) -> list[Arm]:
    """02's arms. The no-augmentation arm is 01's SmallCNN fit and ResNet-18 with the
    standard policy is 03's, so neither trains twice."""
    seeds, one = tuple(P.seeds), tuple(P.seeds[:1])
    small = lambda s, policy, strength=1.0: _specs(  # noqa: E731
        P, dataset, "small_cnn", s, "study000", changes=_aug(policy, strength))
    out = [Arm("02_augmentation", f"02.policy.{p}", small(seeds, p), "every seed")
           for p in AUG_POLICIES]
    out += [Arm("02_augmentation", f"02.strength.standard@{s:g}", small(one, "standard", s),
                "one seed per strength (chosen on validation)") for s in AUG_STRENGTHS]
    out += [Arm("02_augmentation", f"02.single.{p}", small(one, p), "one seed (study 004)")
            for p in AUG_SINGLE]
    out += [Arm("02_augmentation", f"02.resnet18.{p}",
                _specs(P, dataset, "resnet18", one, changes=_aug(p)),
                "one seed: a scratch ResNet-18 costs about 10x a small CNN on a CPU")
            for p in ("none", "standard")]
    return out


# 06: study 001's base models beside the series' own, and their ensembles (06 trains only
# these two; its other members are 03's stored fits)
ENSEMBLE_NEW = {"ddamfn": {"sam": True}, "convnextv2_atto": {}}
ENSEMBLE_STORED = ("03.small_cnn", "03.conv4net", "03.vgg_cnn", "03.mobilenet_v2",
                   "03.mobilenet_v2@160", "03.vgg_cnn_from_fer2013", "03.vgg_cnn@40ep",
                   "03.vgg_cnn_erase@40ep")  # the last four where planned
# DDAMFN trains 3 images/s at 112 px with SAM on one thread (measured; MobileNetV2: 32):
# about 66 h per fer2013 fit, so the cpu plan has it where it costs hours, not days
DDAMFN_CPU_DATASETS = ("six_emotions",)
SMOKE_SUBSET = "stratified:240"  # the smoke profile's 06 fits: the code path, in seconds


def ensemble_arms(P: config.Profile, dataset: str) -> list[Arm]:
    """06's new base models, from scratch at the backbone size: DDAMFN with SAM and its
    attention-diversity loss (study 001) and ConvNeXt-V2 (timm's atto on a CPU, tiny on a
    GPU). Every seed on a GPU or a small dataset; on a CPU one seed on a large one, and
    DDAMFN only where it costs hours (DDAMFN_CPU_DATASETS)."""
    gpu = P.name == "gpu"
    many = gpu or dataset not in LARGE
    seeds = tuple(P.seeds) if many else tuple(P.seeds[:1])
    out = []
    for m, changes in ENSEMBLE_NEW.items():
        model = "convnextv2_tiny" if m.startswith("convnextv2") and gpu else m
        if m == "ddamfn" and P.name == "cpu" and dataset not in DDAMFN_CPU_DATASETS:
            continue
        s = seeds if m != "ddamfn" or gpu else tuple(P.seeds[:1])
        note = "every seed" if len(s) == len(P.seeds) else \
            "one seed: a from-scratch backbone costs 10-50x a small CNN per image on a CPU"
        out.append(Arm("06_ensemble", f"06.{model}",
                       _specs(P, dataset, model, s, changes=changes,
                              subset=SMOKE_SUBSET if P.name == "smoke" else "all"), note))
    return out


# 05: the face-cropped SmallCNN, where images are whole scenes (the others are face crops)
FACE_CROP_DATASETS = ("six_emotions",)


def shift_arms(P: config.Profile, dataset: str) -> list[Arm]:
    """05's own fits: 01's SmallCNN decoded from the largest detected face, every seed, paired
    with 01's fits. (Its contributor fits depend on the data and are declared by 05.)"""
    if dataset not in FACE_CROP_DATASETS:
        return []
    return [Arm("05_domain_shift", "05.face_crop",
                _specs(P, dataset, "small_cnn", tuple(P.seeds), "study000", subset="face_crop"),
                "every seed, paired with 01's baseline fits")]


def main_contributor(splits) -> str | None:
    """The contributor (manifest `source`) with the most training rows, when there are
    several and the others have test rows; else None."""
    by = splits["train"]["source"].astype(str).value_counts()
    if len(by) < 2:
        return None
    others = splits["test"][splits["test"]["source"].astype(str) != by.index[0]]
    return str(by.index[0]) if len(others) else None


def contributor_arms(P: config.Profile, dataset: str, splits) -> list[Arm]:
    """05's shift inside a dataset: 01's SmallCNN (every seed) trained on the main
    contributor's rows only. Which contributor is read from the data, so this arm is
    declared only where the caller has the splits (the plan's listing and training do)."""
    who = main_contributor(splits)
    if who is None:
        return []
    base = arm(P, dataset, "01.small_cnn")
    specs = tuple(replace(s, subset=f"contributor:{who}") for s in base.specs)
    return [Arm("05_domain_shift", "05.contributor", specs,
                f"every seed of {base.name} on contributor {who}'s rows, tested on the others")]


def arms(P: config.Profile, dataset: str, splits=None) -> list[Arm]:
    """Every arm of the series on one dataset, in training order; with the dataset's
    `splits`, also the arms whose fits depend on the data (05's contributor arm)."""
    seeds, one = tuple(P.seeds), tuple(P.seeds[:1])
    out = [
        Arm("01_baseline", "01.small_cnn", _specs(P, dataset, "small_cnn", seeds, "study000"),
            "study 000's SmallCNN and recipe, every seed"),
        Arm("01_baseline", "01.label_shuffle",
            _specs(P, dataset, "small_cnn", one, "study000", subset="label_shuffle"),
            "study 002's sanity check: one seed is enough to show chance"),
    ]
    for m in SMALL_CNNS:
        out.append(Arm("03_capacity", f"03.{m}", _specs(P, dataset, m, seeds), "every seed"))
    extra = ("inception_v3",) if dataset in INCEPTION_DATASETS and "inception_v3" not in P.backbones \
        and P.name == "cpu" else ()
    for m in (*P.backbones, *extra):
        pre = P.pretrained and m in IMAGENET_OFFLINE
        many = pre or P.name == "gpu"
        note = "every seed" if many else "one seed: a scratch backbone costs 3-10x a small CNN on a CPU"
        out.append(Arm("03_capacity", f"03.{m}", _specs(P, dataset, m, seeds if many else one),
                       note))
    out += resolution_arms(P, dataset) + schedule_arms(P, dataset) + transfer_arms(P, dataset)
    out += study_arms(P, dataset) + augmentation_arms(P, dataset) + ensemble_arms(P, dataset)
    return out + shift_arms(P, dataset) + (contributor_arms(P, dataset, splits) if splits is not None else [])


# ImageNet features are learned at 224 px; on the photo dataset (faces a fraction of a scene)
# the cpu profile's 112 px may throw the expression away. One ImageNet backbone also trains
# at HIRES px where that is above the profile's backbone size and the set is small (on the
# large sets it would cost 2x the 112 px fit's hours)
HIRES = 160
HIRES_MODEL = "mobilenet_v2"


def resolution_arms(P: config.Profile, dataset: str) -> list[Arm]:
    """03's input-resolution arm: MobileNetV2 from ImageNet weights at HIRES px, every seed."""
    if HIRES <= P.backbone_size or dataset in LARGE or not (P.pretrained and HIRES_MODEL in IMAGENET_OFFLINE):
        return []
    specs = tuple(replace(s, img_size=HIRES) for s in _specs(P, dataset, HIRES_MODEL, tuple(P.seeds)))
    return [Arm("03_capacity", f"03.{HIRES_MODEL}@{HIRES}", specs,
                f"every seed, {HIRES} px against the profile's {P.backbone_size} px")]


# fer2013's VGG-style net peaked at its last epoch in every 25-epoch seed (cosine: the cap
# binds), so it also trains at the small-set cap; on facial_expressions it stops early
LONG_DATASETS = ("fer2013",)
LONG_MODEL = "vgg_cnn"
LONG_AUGMENT = "shift_erase"  # the 40-epoch fits overfit from about epoch 22 on "shift"


def schedule_arms(P: config.Profile, dataset: str) -> list[Arm]:
    """03's epoch-cap arm: LONG_MODEL for `P.max_epochs` cosine epochs instead of the large
    sets' `P.large_epochs`, every seed (07 chooses between the two caps on validation)."""
    if dataset not in LONG_DATASETS or not P.large_epochs or P.large_epochs >= P.max_epochs:
        return []
    seeds = tuple(P.seeds)
    specs = _specs(P, dataset, LONG_MODEL, seeds, changes={"epochs": P.max_epochs})
    erase = _specs(P, dataset, LONG_MODEL, seeds,
                   changes={"epochs": P.max_epochs, "augment": LONG_AUGMENT})
    return [Arm("03_capacity", f"03.{LONG_MODEL}@{P.max_epochs}ep", specs,
                f"every seed, {P.max_epochs} epochs against {P.large_epochs}"),
            Arm("03_capacity", f"03.{LONG_MODEL}_erase@{P.max_epochs}ep", erase,
                f"every seed, {P.max_epochs} epochs with random erasing added to the "
                f"default augmentation (the longer fits overfit: validation loss rises)")]


# the other 48 px grayscale face sets also start a small CNN from its FER2013 fit (28,709
# faces of the same 7 expressions): the in-domain counterpart of ImageNet initialisation
TRANSFER_SOURCE = "fer2013"
TRANSFER_DATASETS = ("facial_expressions", "ckplus48")
TRANSFER_MODEL = "vgg_cnn"
TRANSFER_LR = 5e-4  # fine-tuning, as for ImageNet weights: the full lr undoes what it brings


def transfer_arms(P: config.Profile, dataset: str) -> list[Arm]:
    """03's FER2013-initialised arm: TRANSFER_MODEL from its stored FER2013 fit (seed 0; the
    head keeps the rows of the classes both share), fine-tuned with the common recipe, every
    seed (the seeds vary the fine-tuning)."""
    if dataset not in TRANSFER_DATASETS:
        return []
    from lib.training import store

    src = _specs(P, TRANSFER_SOURCE, TRANSFER_MODEL, tuple(P.seeds[:1]))[0]
    init = {"dataset": TRANSFER_SOURCE, "spec": store.spec_dict(src)}
    specs = tuple(replace(s, init=init) for s in
                  _specs(P, dataset, TRANSFER_MODEL, tuple(P.seeds), changes={"lr": TRANSFER_LR}))
    return [Arm("03_capacity", f"03.{TRANSFER_MODEL}_from_{TRANSFER_SOURCE}", specs,
                f"every seed, each starting from {TRANSFER_SOURCE}'s seed-{src.seed} fit")]


def arm(P: config.Profile, dataset: str, name: str) -> Arm:
    """One arm by name (e.g. '03.conv4net')."""
    found = {a.name: a for a in arms(P, dataset)}
    if name not in found:
        raise KeyError(f"no arm {name!r} in the plan for {dataset}; have {sorted(found)}")
    return found[name]


def arms_of(P: config.Profile, dataset: str, notebook: str, splits=None) -> list[Arm]:
    """One notebook's arms (with `splits`, also those declared from the data)."""
    return [a for a in arms(P, dataset, splits) if a.notebook == notebook]

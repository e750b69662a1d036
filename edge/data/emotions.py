"""Emotion labels from action-unit combinations, for the synthetic source.

Each pattern is one prototypical AU combination (EMFACS, Friesen & Ekman 1983; the CASME II coding
guide, Yan et al. 2014) with its native emotion, its MEGC2019 3-class composite label (negative /
positive / surprise) and its CASME II 5-class label (happiness, disgust, repression, surprise, others).
Micro-expressions are partial and low intensity, so most patterns are subsets of the full prototype:
CASME II itself codes e.g. disgust mostly as AU4 or AU9 alone, and the generator draws per-AU
intensities so that no single AU decides the class by its size.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPOSITE_CLASSES = ("negative", "positive", "surprise")
CASME2_CLASSES = ("happiness", "disgust", "repression", "surprise", "others")
CLASS_SETS = {"composite": COMPOSITE_CLASSES, "casme2": CASME2_CLASSES}


@dataclass(frozen=True)
class Pattern:
    emotion: str
    aus: tuple[int, ...]
    composite: str | None  # None: not in the 3-class composite (MEGC2019 drops "others")
    casme2: str | None     # None: not in the CASME II 5-class set (fear, sadness, anger, contempt)


PATTERNS: tuple[Pattern, ...] = (
    # Happiness: AU12 is the defining action; AU6 makes it a Duchenne smile (EMFACS happiness = 6+12).
    Pattern("happiness", (6, 12), "positive", "happiness"),
    Pattern("happiness", (12,), "positive", "happiness"),
    Pattern("happiness", (6, 7, 12), "positive", "happiness"),
    # Surprise: brows up (1+2), upper lids up (5), jaw drop (26); EMFACS surprise = 1+2+5B+26.
    Pattern("surprise", (1, 2, 5, 26), "surprise", "surprise"),
    Pattern("surprise", (1, 2), "surprise", "surprise"),
    Pattern("surprise", (1, 2, 5), "surprise", "surprise"),
    # Disgust: nose wrinkle (9) and/or upper-lip raise (10), often with 15/17 (EMFACS 9, 9+15+16, 10+17).
    Pattern("disgust", (9,), "negative", "disgust"),
    Pattern("disgust", (9, 10), "negative", "disgust"),
    Pattern("disgust", (10, 17), "negative", "disgust"),
    Pattern("disgust", (4, 9), "negative", "disgust"),
    # Repression (CASME II): an emotion held back; the coders note AU14, AU15, AU17 (and 24) that mask it.
    Pattern("repression", (14,), "negative", "repression"),
    Pattern("repression", (15, 17), "negative", "repression"),
    Pattern("repression", (14, 17), "negative", "repression"),
    # Sadness (EMFACS 1+4+15), fear (1+2+4+5+20), anger (4+5+7+23; AU23 not modelled), contempt (R14):
    # negative in the composite, outside the CASME II 5-class set.
    Pattern("sadness", (1, 4, 15), "negative", None),
    Pattern("fear", (1, 2, 4, 5, 20), "negative", None),
    Pattern("anger", (4, 5, 7), "negative", None),
    Pattern("anger", (4, 7), "negative", None),
    # Others (CASME II): movements with no emotion prototype, e.g. a lone brow lowering or lid tightening.
    Pattern("others", (4,), None, "others"),
    Pattern("others", (7,), None, "others"),
    Pattern("others", (1,), None, "others"),
    Pattern("others", (17,), None, "others"),
)


def patterns_for(class_set: str, label: str) -> list[Pattern]:
    """The AU patterns that carry `label` in `class_set` ("composite" or "casme2")."""
    if class_set not in CLASS_SETS:
        raise KeyError(f"unknown class set {class_set!r}; known: {', '.join(CLASS_SETS)}")
    out = [p for p in PATTERNS if getattr(p, class_set) == label]
    if not out:
        raise KeyError(f"unknown {class_set} label {label!r}; known: {', '.join(CLASS_SETS[class_set])}")
    return out

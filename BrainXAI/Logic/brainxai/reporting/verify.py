"""Grounding check: every claim of a free-text report must be supported by the findings it was written from.

Claims are read sentence by sentence: tumour types, anatomical names (Harvard-Oxford names, their synonyms and the
lobes and groups they belong to), laterality, numbers with their units, and negations, including statements about
things the findings never measure ("no midline shift"). A claim is supported when the findings say it: the same
class, a listed region, the lesion's or that region's side, a findings value equal after rounding to the digits the
report shows (percentages may be probabilities x 100), a negation of something the findings rule out. Anything else
is reported, one line each. The check is deliberately strict: a true statement the findings do not contain is
still unsupported, because the report must say only what the analysis measured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..mni.atlas import display_name, hemisphere_of, terminology_rows
from .findings import walk

@dataclass(frozen=True)
class Claim:
    kind: str
    text: str
    supported: bool
    reason: str = ""
    start: int = 0
    subject: str = ""  # for tumour-type claims: the class named

    def line(self) -> str:
        return f'unsupported {self.kind}: "{self.text}" ({self.reason})'


@dataclass
class Verification:
    claims: list[Claim]

    @property
    def unsupported(self) -> list[Claim]:
        return [c for c in self.claims if not c.supported]

    @property
    def ok(self) -> bool:
        return not self.unsupported

    @property
    def states_diagnosis(self) -> bool:
        """Whether the report says what the classifier concluded (a refusal or an empty text has no false claim,
        and says nothing either)."""
        return any(c.supported and c.subject == "diagnosis" for c in self.claims)

    def summary(self) -> dict:
        return {"claims": len(self.claims), "unsupported": [c.line() for c in self.unsupported], "passed": self.ok}


# ------------------------------------------------------------------------------------------------ lexicons

_CLASS_PATTERNS = {
    "glioma": r"gliomas?|glial (?:tumou?r|neoplasm)s?",
    "meningioma": r"meningiomas?",
    "pituitary": r"pituitary (?:tumou?r|adenoma|macroadenoma|microadenoma|lesion|neoplasm)s?|(?:pituitary )?"
                 r"(?:macro|micro)?adenomas?|pituitary",
    "no_tumor": r"no[ _-]tumou?r(?: class)?",
}
# More specific (or other) diagnoses than the four classes: the findings cannot support them.
_OTHER_DIAGNOSES = (r"glioblastomas?|gbm|astrocytomas?|oligodendrogliomas?|ependymomas?|medulloblastomas?|"
                    r"metastas[ie]s|metastatic|lymphomas?|schwannomas?|craniopharyngiomas?|abscess(?:es)?|"
                    r"high[- ]grade|low[- ]grade|(?:who )?grade (?:i{1,3}v?|iv|[1-4])|benign|malignan\w+|"
                    r"multifocal|multicentric|extra-?axial|intra-?axial")
# Imaging findings the analysis never measures: stating them, or their absence, is not grounded.
_UNMEASURED = (r"o?edema(?:tous)?|mass effect|midline shift|haemorrhag\w*|hemorrhag\w*|hydrocephalus|herniation|"
               r"(?:ring[- ])?enhanc\w+|necro\w+|calcifi\w+|infarct\w*|restricted diffusion|diffusion restriction|"
               r"cyst(?:ic)?|dural tail|vasogenic|effacement|infiltrat\w+|invasion|invasive|"
               r"resection|biopsy|surgery|surgical|neurosurg\w+|radiotherapy|chemotherapy|metastatic work-?up")
_PRESENCE = r"lesion|mass|tumou?r|neoplasm|abnormality"
# "a ... lesion", "there is ... mass", "lesion is seen": the noun asserted to exist, not used as a technical term.
_ASSERTED_BEFORE = re.compile(r"(?:\b(?:a|an|one|there is|there are|shows?|demonstrates?|reveals?|consistent with|"
                              r"suggest\w*)\b)(?:\s+[\w.%-]+){0,4}\s*$", re.I)
_ASSERTED_AFTER = re.compile(r"\s+(?:is|was|are|were)\s+(?:\w+\s+)?(?:present|seen|identified|noted|centred|"
                             r"centered|located|detected|visible|demonstrated)\b", re.I)
# "review the scan if a lesion is suspected": a condition, not a finding.
_HYPOTHETICAL = re.compile(r"\b(?:if|unless|whether|in case)\b[^,;:.]*$", re.I)
_NEGATION = re.compile(r"\b(?:no|not|without|absence of|absent|negative for|free of|neither|nor|excludes?|"
                       r"rules? out|spares|sparing|none|uninvolved)\b|n't\b", re.I)
# "X is spared": the negation governs what comes before it in the clause.
_NEGATION_AFTER = re.compile(r"\b(?:is|are|was|were|remains?)\s+(?:spared|uninvolved|not involved|normal|unremarkable|"
                             r"unaffected|intact)\b", re.I)
_CLAUSE_START = re.compile(r".*(?:[;,:(]|\bbut\b|\bhowever\b|\bwhile\b|\bwhereas\b|\band\b)", re.I | re.S)
_CLAUSE_END = re.compile(r"[;,:(]|\bbut\b|\bhowever\b|\bwhile\b|\bwhereas\b|\band\b(?= (?:the|a|an|it)\b)", re.I)
# A class named as the alternative: the hedge comes before it ("over meningioma") or right after it
# ("meningioma is less likely"), in the same clause; a hedge elsewhere in the sentence does not count.
_HEDGE_BEFORE = re.compile(r"\b(?:over|rather than|than|versus|vs\.?|compared (?:to|with)|differential(?: diagnosis)?"
                           r"(?: includes?)?|alternatives?(?: include)?|less likely|unlikely|lower for)\W+(?:an?\s+|the\s+)?$",
                           re.I)
_HEDGE_AFTER = re.compile(r"^\W*(?:is|was|appears|seems|remains)?\s*(?:much\s+|far\s+)?(?:less likely|unlikely|"
                          r"lower|second|improbable)\b", re.I)


# The number right after a class name is that class's probability: "glioma (p = 0.85)", "glioma 85%".
_CLASS_PROBABILITY = re.compile(r"\s*(?:\(|:|=|,|-|–|—|\bat\b|\bof\b)?\s*(?:p\s*=\s*|probability\s*)?"
                                r"([01]?\.\d+|\d{1,3}(?:\.\d+)?)(?!\d|\.\d|st\b|nd\b|rd\b|th\b)\s*(%)?"
                                r"(?!\s*percentile)")
# A counterfactual statement: what the model says once a map's region is taken away. Its class names are the
# counterfactual's, not the diagnosis's ("without the Grad-CAM++ region the model predicts no tumour").
_REGION_WORDS = r"(?:regions?|evidence|areas?|mask|highlight\w*|hotspots?)"
_COUNTERFACTUAL = re.compile(rf"\bcounterfactual\b|\b(?P<without>without)\s+(?:the|this|that|these|its)\b[^.;]{{0,60}}?"
                             rf"\b{_REGION_WORDS}\b|\b(?:remov\w*|inpaint\w*|occlu\w+|eras\w+|delet\w+|blurr\w*)\b"
                             rf"[^.;]{{0,60}}?\b{_REGION_WORDS}\b|\b{_REGION_WORDS}\b[^.;]{{0,30}}?\b(?:removed|inpainted|"
                             r"occluded|erased|deleted|blurred|masked out)\b", re.I)
# A minimal-evidence statement: what the model says from a map's region alone, the rest blurred away ("from the
# minimal-evidence region alone the model keeps glioma"). Its class names are that entry's, like a counterfactual's.
_KEPT_ONLY = re.compile(rf"\b{_REGION_WORDS}\b[^.;]{{0,40}}?\b(?:alone|only)\b|\b(?:only|just)\s+(?:the|this|that|its)\b"
                        rf"[^.;]{{0,60}}?\b{_REGION_WORDS}\b|\bminimal[- ]evidence\b[^.;]{{0,80}}?\b(?:keeps?|kept|"
                        r"predicts?|still)\b", re.I)
# Before a class name in a counterfactual statement: the call it had before, or one it no longer gets.
_BEFORE_EDIT = re.compile(r"\b(?:from|was|were|originally|previously|instead of|rather than)\s+(?:an?\s+|the\s+)?$", re.I)
_DENIED = re.compile(r"\b(?:no longer|not|never|n't)\b[^,;]{0,25}$", re.I)


@lru_cache(maxsize=1)
def _method_patterns() -> dict[str, re.Pattern]:
    from ..explain import TITLES

    # "Grad-CAM" must not also match "Grad-CAM++"
    return {m: re.compile(rf"(?<![\w-])(?:{re.escape(t)}|{re.escape(m)})(?!\+|\w)", re.I) for m, t in TITLES.items()}


def _methods_named(s: str) -> list[str]:
    """The methods a sentence names; a title inside a longer one's match ("Minimal evidence" in "Minimal evidence
    (optimised)") names only the longer."""
    spans = {m: [x.span() for x in pat.finditer(s)] for m, pat in _method_patterns().items()}
    spans = {m: v for m, v in spans.items() if v}
    return [m for m, v in spans.items()
            if any(not any(o != m and a <= x and y <= b and (b - a) > (y - x) for o, w in spans.items() for a, b in w)
                   for x, y in v)]


def _hedged(sentence: str, m: re.Match) -> bool:
    before = re.split(r"[;:.]", sentence[max(0, m.start() - 40):m.start()])[-1]
    return bool(_HEDGE_BEFORE.search(before) or _HEDGE_AFTER.match(sentence[m.end():m.end() + 30]))

# Harvard-Oxford names without side, and synonyms a radiologist uses.
_SYNONYMS = {
    "Insular Cortex": ["insula", "insular cortex", "insular lobe", "insular"],
    "Brain-Stem": ["brain-stem", "brainstem", "brain stem"],
    "Pallidum": ["pallidum", "globus pallidus"],
    "Caudate": ["caudate nucleus", "caudate"],
    "Accumbens": ["nucleus accumbens", "accumbens"],
    "Cerebral White Matter": ["cerebral white matter", "white matter"],
    "Cerebral Cortex": ["cerebral cortex"],
    "Lateral Ventricle": ["lateral ventricles?", "ventricles?", "ventricular"],
    "Thalamus": ["thalamus", "thalamic"],
    "Putamen": ["putamen", "putaminal"],
    "Hippocampus": ["hippocampus", "hippocampal"],
    "Amygdala": ["amygdala"],
    "Precuneous Cortex": ["precuneous cortex", "precuneus"],
    "Juxtapositional Lobule Cortex (formerly Supplementary Motor Cortex)": [
        "juxtapositional lobule(?: cortex)?", "supplementary motor (?:cortex|area)", "sma"],
    "Heschl's Gyrus (includes H1 and H2)": ["heschl'?s gyrus(?: \\(includes h1 and h2\\))?", "transverse temporal gyrus"],
}
# Groups a region belongs to (lobes, basal ganglia): naming the group is supported by any member.
_GROUPS = {
    "frontal lobe": ["frontal lobes?", "frontal"],
    "temporal lobe": ["temporal lobes?", "temporal"],
    "parietal lobe": ["parietal lobes?", "parietal"],
    "occipital lobe": ["occipital lobes?", "occipital"],
    "basal ganglia": ["basal ganglia", "lentiform nucleus", "striatum", "deep grey matter", "deep gray matter"],
    "cingulate": ["cingulate(?: gyrus| cortex)?", "limbic lobe"],
}
_GROUP_OF_KEYWORD = [("Frontal", "frontal lobe"), ("Precentral", "frontal lobe"), ("Juxtapositional", "frontal lobe"),
                     ("Paracingulate", "frontal lobe"), ("Subcallosal", "frontal lobe"),
                     ("Central Opercular", "frontal lobe"), ("Central Opercular", "parietal lobe"),
                     ("Temporal", "temporal lobe"), ("Planum", "temporal lobe"), ("Heschl", "temporal lobe"),
                     ("Parahippocampal", "temporal lobe"), ("Postcentral", "parietal lobe"),
                     ("Parietal", "parietal lobe"), ("Supramarginal", "parietal lobe"), ("Angular", "parietal lobe"),
                     ("Precuneous", "parietal lobe"), ("Occipital", "occipital lobe"), ("Calcarine", "occipital lobe"),
                     ("Cuneal", "occipital lobe"), ("Lingual", "occipital lobe"), ("Putamen", "basal ganglia"),
                     ("Pallidum", "basal ganglia"), ("Caudate", "basal ganglia"), ("Accumbens", "basal ganglia"),
                     ("Cingulate", "cingulate")]
# Anatomy outside the atlas's names: never supported as a location.
_OTHER_ANATOMY = [r"cerebell\w+", r"corpus callosum", r"pons", r"pontine", r"medulla(?: oblongata)?", r"midbrain",
                  r"(?:supra|para)?sellar?(?: region| turcica)?", r"cavernous sinus", r"optic chiasm",
                  r"pituitary (?:gland|fossa)", r"hypothalam\w+", r"fourth ventricle", r"third ventricle",
                  r"centrum semiovale", r"corona radiata", r"internal capsule", r"falx", r"tentorium",
                  r"convexity", r"skull base", r"orbit(?:s|al)?", r"scalp", r"skull", r"dura(?:l)?", r"meninges"]


def _base(name: str) -> str:
    return re.sub(r"^(?:Left|Right)\s+", "", display_name(name)).strip()


@lru_cache(maxsize=1)
def _region_lexicon() -> list[tuple[re.Pattern, str]]:
    """(pattern, key) for every anatomical name we recognise, longest first so 'insular cortex' beats 'cortex'."""
    names = {_base(r["Name"]) for r in terminology_rows().values()} | set(_SYNONYMS)
    entries: list[tuple[str, str]] = []
    for name in names:
        entries.append((re.escape(name.lower()).replace(r"\ ", r"[\s,]+"), name))
        for syn in _SYNONYMS.get(name, []):
            entries.append((syn, name))
    for group, pats in _GROUPS.items():
        entries += [(p, "group:" + group) for p in pats]
    entries += [(p, "other:" + p) for p in _OTHER_ANATOMY]
    entries.sort(key=lambda e: -len(e[0]))
    return [(re.compile(rf"\b{p}\b", re.I), key) for p, key in entries]


def _groups_of(base: str) -> set[str]:
    return {"group:" + g for kw, g in _GROUP_OF_KEYWORD if kw in base}


# ------------------------------------------------------------------------------------------------ findings facts


@dataclass
class _Facts:
    label: str
    probabilities: dict
    regions: dict  # base name -> set of sides ("left", "right", "bilateral", "midline" or None)
    shares: dict  # base name -> {"lesion": [percent_of_lesion...], "region": [percent_of_region...]}
    keys: set  # region keys and groups the findings support
    sides: set  # sides the findings support for the lesion
    lesion_ml: float
    numbers: dict  # unit class -> list of values
    strings: list  # string leaves, for numbers quoted verbatim (versions, stop conditions)
    converged: bool | None
    centroid: list | None
    phantom: bool
    has_warnings: bool
    contrast_enhanced: bool | None = None  # the input check's verdict on the scan (None: not checked)
    hemisphere: str | None = None  # lesion.hemisphere: the side of the lesion as a whole
    counterfactuals: dict | None = None  # method -> its counterfactual entry (those computed)
    kept_only: dict | None = None  # method -> its minimal_evidence entry (the call from its region alone)


def _facts(findings: dict) -> _Facts:
    d, lesion = findings["diagnosis"], findings["lesion"]
    regions: dict[str, set] = {}
    named = [(r["name"], r["hemisphere"]) for r in findings["regions"]]
    if lesion["peak_region"]:
        named.append((lesion["peak_region"], None))
    for name, hemi in named:
        side = hemisphere_of(name) or hemi
        regions.setdefault(_base(name), set()).add(side)
    shares: dict[str, dict] = {}
    for r in findings["regions"]:
        share = shares.setdefault(_base(r["name"]), {"lesion": [], "region": []})
        share["lesion"].append(r["percent_of_lesion"])
        if r["percent_of_region"] is not None:
            share["region"].append(r["percent_of_region"])
    keys = set(regions) | {g for base in regions for g in _groups_of(base)}
    sides = {s for ss in regions.values() for s in ss if s} | ({lesion["hemisphere"]} if lesion["hemisphere"] else set())
    if {"left", "right"} <= sides:
        sides.add("bilateral")
    numbers: dict[str, list[float]] = {"ml": [], "percent": [], "mm": [], "any": []}
    strings = []
    for path, v in walk(findings):
        if isinstance(v, (dict, list)):
            continue
        if isinstance(v, str):
            strings.append(v)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        key = next((p for p in reversed(path) if isinstance(p, str)), "")
        numbers["any"].append(float(v))
        if key.endswith("_ml"):
            numbers["ml"].append(float(v))
        if key.startswith("percent") or key.endswith("percent") or key.endswith("percentile"):
            numbers["percent"].append(float(v))
        if "_percent_" in key:  # area_percent_of_brain
            numbers["percent"].append(float(v))
        if key == "dice_vs_segmentation" or path[:2] == ("diagnosis", "probabilities") or (
                ("counterfactual" in path or "minimal_evidence" in path) and "probabilities" in path):
            numbers["percent"].append(100.0 * float(v))
        if key in ("spacing_mm", "centroid_mni"):
            numbers["mm"].append(float(v))
    numbers["any"] += [len(findings["regions"]), len(findings["explanations"])]
    reg = findings.get("registration")
    return _Facts(d["label"], d["probabilities"], regions, shares, keys, sides, float(lesion["volume_ml"]), numbers, strings,
                  None if reg is None else bool(reg["converged"]),
                  lesion["centroid_mni"], bool(findings["input"]["phantom"]), bool(findings["warnings"]),
                  (findings.get("input_check") or {}).get("contrast_enhanced"), lesion["hemisphere"],
                  {e["method"]: e["counterfactual"] for e in findings["explanations"] if e.get("counterfactual")},
                  {e["method"]: e["minimal_evidence"] for e in findings["explanations"] if e.get("minimal_evidence")})


# ------------------------------------------------------------------------------------------------ text


def _sentences(text: str) -> list[tuple[int, str]]:
    """(offset, sentence): split at line breaks and at sentence ends, never inside a number like 23.4 or 'e.g.'."""
    out = []
    for m in re.finditer(r"[^\n]+", text):
        line, base = m.group(), m.start()
        start = 0
        for end in re.finditer(r"(?<!\b[A-Za-z])(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\bapprox)[.!?](?=\s+[A-Z(\"'*]|\s*$)",
                               line):
            out.append((base + start, line[start:end.end()]))
            start = end.end()
        if line[start:].strip():
            out.append((base + start, line[start:]))
    return out


def _negated_spans(sentence: str) -> list[tuple[int, int]]:
    """Character spans a negation cue governs: from the cue to the end of its clause."""
    spans = []
    for m in _NEGATION.finditer(sentence):
        end = _CLAUSE_END.search(sentence, m.end())
        stop = end.start() if end else len(sentence)
        rest = re.split(r"[;.!?]|\bbut\b|\bhowever\b", sentence[m.end():], maxsplit=1)[0]
        if end and end.group() == "," and re.search(r"\b(?:or|nor)\b", rest):  # "no A, B or C": the whole list
            stop = m.end() + len(rest)
        spans.append((m.start(), stop))
    for m in _NEGATION_AFTER.finditer(sentence):
        before = _CLAUSE_START.match(sentence[:m.start()])
        spans.append((before.end() if before else 0, m.end()))
    return spans


def _inside(pos: int, spans) -> bool:
    return any(a <= pos < b for a, b in spans)


_SIDE = re.compile(r"\b(left|right)(?:[- ]sided|[- ]hemispher\w*)?\b|\b(bilateral(?:ly)?|both (?:cerebral )?"
                   r"hemispheres|midline)\b",
                   re.I)
_UNILATERAL = re.compile(r"\b(?:unilateral(?:ly)?|one-sided|single hemisphere)\b", re.I)
# Words that make a side exclusive ("confined to the left", "only in the right hemisphere")
_EXCLUSIVE = re.compile(r"\b(?:confined|limited|restricted|isolated|localised|localized)\s+to\s+(?:the\s+)?$|"
                        r"\b(?:only|solely|exclusively|purely|entirely|wholly|strictly)\s+(?:(?:with)?in\s+)?(?:the\s+)?$",
                        re.I)
# A lobe named as the seat of the lesion itself: "a left frontal mass", "left temporal glioma"
_LESION_NOUN = re.compile(r"(?:\s+lobe)?\s+(?:\w+\s+)?(?:mass|lesion|tumou?r|glioma|meningioma|neoplasm|process|"
                          r"abnormality)\b", re.I)
_NUM = r"[-−]?\d+(?:\.\d+)?"
# A number not glued to a word (T1, MNI152, H1, hex digests), an ordinal of a percentile, and its unit.
_NUMBER = re.compile(r"(?<![\w.\-−])(?<![A-Za-z]-)([-−]?\d+(?:\.\d+)*)((?:st|nd|rd|th)(?=\s+percentile))?"
                     r"(\s*(?:%|percent|per cent|mL|ml|millilit(?:re|er)s?|cc|cm3|cm³|mm3|mm³|cubic mm|mm)(?![A-Za-z])"
                     r"|(?!\w))", re.I)
_UNITS = {"ml": "ml", "millilitre": "ml", "milliliter": "ml", "millilitres": "ml", "milliliters": "ml", "cc": "ml",
          "cm3": "ml", "cm³": "ml", "mm3": "mm3", "mm³": "mm3", "cubic mm": "mm3", "%": "%", "percent": "%",
          "per cent": "%", "mm": "mm"}
_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
# A number in words with a unit ("twenty-three millilitres", "fifty percent"): checked like digits.
_WORD_NUMBER = re.compile(rf"\b((?:{'|'.join(_TENS)})(?:[- ](?:{'|'.join(_ONES[1:10])}))?|{'|'.join(_ONES)}|"
                          r"(?:one |a )?hundred)\s+(percent|per cent|millilit(?:re|er)s?|ml|cc|slices?)\b", re.I)


def _word_value(words: str) -> int:
    words = words.lower().replace("-", " ").split()
    if words[-1] == "hundred":
        return 100
    value = 0
    for w in words:
        value += _ONES.index(w) if w in _ONES else 10 * (_TENS.index(w) + 2)
    return value


_TRIPLE = re.compile(rf"(?:\bx\s*=\s*({_NUM})\s*(?:mm)?\s*,?\s*y\s*=\s*({_NUM})\s*(?:mm)?\s*,?\s*(?:and\s+)?z\s*=\s*"
                     rf"({_NUM}))|(?<![\w.])({_NUM})\s*(?:mm)?\s*,\s*({_NUM})\s*(?:mm)?\s*,\s*(?:and\s+)?({_NUM})(?![\w.]*\d)",
                     re.I)
_COORD_CONTEXT = re.compile(r"\bmni\b|\bcoordinates?\b|\bcentroid\b|\b[xyz]\s*=|\(\s*x\s*,\s*y\s*,\s*z\s*\)", re.I)


def _matches(token: str, values: list[float]) -> bool:
    decimals = len(token.split(".")[1]) if "." in token else 0
    x = float(token.replace("−", "-"))
    tol = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(v - x) <= tol for v in values)


def _verbatim(value: str) -> re.Pattern:
    """A findings string as it appears in a Markdown report: punctuation may be backslash-escaped and underscores
    turned into spaces (emphasis is blanked before matching)."""
    parts = [re.escape(c) if c.isalnum() or c == " " else r"\\?" + ("[_ ]" if c == "_" else re.escape(c))
             for c in value]
    return re.compile("".join(parts))


class _Checker:
    def __init__(self, findings: dict):
        self.f = _facts(findings)
        self.claims: list[Claim] = []
        # Names quoted from the findings (template, atlas, stop condition): their digits are not claims of their own.
        self.quoted = [_verbatim(v) for v in self.f.strings if len(v) >= 6 and re.search(r"\d", v)]
        self.quoted_numbers = set(re.findall(r"\d+(?:\.\d+)*", " ".join(self.f.strings)))

    def add(self, kind, text, supported, reason, start, subject=""):
        self.claims.append(Claim(kind, text.strip(), supported, "" if supported else reason, start, subject))

    # -- tumour types and presence -------------------------------------------------------------------------
    def tumour(self, s: str, off: int, neg, taken: list):
        f = self.f
        for cls, pat in _CLASS_PATTERNS.items():
            for m in re.finditer(rf"\b(?:{pat})\b", s, re.I):
                if any(a <= m.start() < b for a, b in taken):
                    continue
                taken.append(m.span())
                after = s[m.end():m.end() + 25]
                prob = _CLASS_PROBABILITY.match(after)
                if prob:  # a class with its probability: the number must be that class's
                    raw = prob.group(1)
                    percent = bool(prob.group(2)) or float(raw) > 1
                    ok = _matches(raw, [f.probabilities[cls] * (100 if percent else 1)])
                    self.add("number", m.group() + after[:prob.end()], ok,
                             f"the findings give {cls} probability {f.probabilities[cls]:.2f}", off + m.start(),
                             "diagnosis" if cls == f.label else "")
                    taken.append((m.end(), m.end() + prob.end()))
                    continue
                negated = _inside(m.start(), neg)
                subject = "diagnosis" if cls == f.label else ""
                if cls == "no_tumor":
                    self.add("negation", m.group(), f.label == "no_tumor",
                             f"the findings' class is {f.label}", off + m.start(), subject)
                elif negated:
                    self.add("negation", m.group(), cls != f.label,
                             f"the findings' class is {f.label}, which this denies", off + m.start())
                elif cls != f.label and not _hedged(s, m):
                    self.add("tumour_type", m.group(), False, f"the findings' class is {f.label}", off + m.start())
                else:
                    self.add("tumour_type", m.group(), True, "", off + m.start(), subject)
        for m in re.finditer(rf"\b(?:{_OTHER_DIAGNOSES})\b", s, re.I):
            if _inside(m.start(), neg):
                self.add("negation", m.group(), False, "the findings say nothing about this", off + m.start())
            else:
                self.add("tumour_type", m.group(), False,
                         f"the findings' class is {f.label}, nothing more specific", off + m.start())
        for m in re.finditer(rf"\b(?:{_PRESENCE})s?\b", s, re.I):
            if any(a <= m.start() < b for a, b in taken):
                continue
            if _inside(m.start(), neg):
                self.add("negation", s[max(0, m.start() - 12):m.end()].strip(), f.label == "no_tumor" or f.lesion_ml == 0,
                         f"the findings report a {f.lesion_ml:g} mL lesion ({f.label})", off + m.start())
            elif f.label == "no_tumor" and f.lesion_ml == 0 and not _HYPOTHETICAL.search(s[:m.start()]) and (
                    _ASSERTED_BEFORE.search(s[:m.start()]) or _ASSERTED_AFTER.match(s[m.end():])):
                self.add("tumour_type", m.group(), False, "the findings report no tumour and no lesion",
                         off + m.start())

    def counterfactual(self, s: str, off: int, taken: list, kept_only: bool = False):
        """Class names (and their probabilities) in a counterfactual statement, against the counterfactuals of the
        methods it names (all of them when it names none); after "from"/"was" against the diagnosis. kept_only: a
        minimal-evidence statement (the region alone), against the minimal_evidence entries the same way."""
        f = self.f
        entries = (f.kept_only if kept_only else f.counterfactuals) or {}
        edited = "with only the region kept" if kept_only else "with the region removed"
        what = "minimal-evidence result" if kept_only else "counterfactual"
        named = _methods_named(s)
        cases = [entries[m] for m in (named or entries) if m in entries]
        for cls, pat in _CLASS_PATTERNS.items():
            for m in re.finditer(rf"\b(?:{pat})\b", s, re.I):
                if any(a <= m.start() < b for a, b in taken):
                    continue
                taken.append(m.span())
                before, after = s[:m.start()], s[m.end():m.end() + 25]
                original = bool(_BEFORE_EDIT.search(before))
                prob = _CLASS_PROBABILITY.match(after)
                if not cases and not original:
                    self.add("counterfactual", m.group() + (after[:prob.end()] if prob else ""), False,
                             f"the findings hold no {what}" + (f" for {', '.join(named)}" if named else ""),
                             off + m.start())
                    continue
                if prob:
                    raw = prob.group(1)
                    scale = 100 if (prob.group(2) or float(raw) > 1) else 1
                    values = [f.probabilities[cls]] if original else [c["probabilities"][cls] for c in cases]
                    self.add("number", m.group() + after[:prob.end()], _matches(raw, [v * scale for v in values]),
                             ("the findings give " if original else f"{edited} the findings give ")
                             + f"{cls} probability " + ", ".join(f"{v:.2f}" for v in values), off + m.start())
                    taken.append((m.end(), m.end() + prob.end()))
                elif re.match(r"\s+(?:probability|likelihood|score)\b", after, re.I):
                    continue  # "the glioma probability falls to 22%": names a probability, its number is checked
                elif original:
                    self.add("counterfactual", m.group(), cls == f.label, f"the findings' class is {f.label}",
                             off + m.start())
                elif _DENIED.search(before):
                    self.add("counterfactual", m.group(), all(c["label"] != cls for c in cases),
                             f"{edited} the model still predicts " + cls, off + m.start())
                else:
                    self.add("counterfactual", m.group(), any(c["label"] == cls for c in cases),
                             f"{edited} the model predicts "
                             + " / ".join(sorted({c["label"] for c in cases})), off + m.start())

    # -- anatomy and sides -----------------------------------------------------------------------------------
    def anatomy(self, s: str, off: int, neg, taken: list) -> list:
        found = []
        for pattern, key in _region_lexicon():
            for m in pattern.finditer(s):
                if any(a < m.end() and m.start() < b for a, b in taken):
                    continue
                taken.append(m.span())
                found.append((m, key))
        for m, key in found:
            negated = _inside(m.start(), neg)
            present = key in self.f.keys
            if key.startswith("other:"):
                present = False
            if negated:
                self.add("negation", m.group(), not present, "the findings list this region as involved",
                         off + m.start())
            else:
                self.add("region", m.group(), present, "not among the findings' regions", off + m.start())
        return found

    def sides(self, s: str, off: int, neg, anatomy: list, raw: str = ""):
        f = self.f
        for m in _SIDE.finditer(s):
            side = (m.group(1) or m.group(2)).lower()
            side = "bilateral" if side.startswith(("bilateral", "both")) else side
            if side == "midline" and re.search(r"\b(?:cross\w*|across)\s+(?:the\s+)?$", s[:m.start()], re.I):
                side = "bilateral"  # "crosses the midline" says both hemispheres
            negated = _inside(m.start(), neg)
            # A side written next to a region names that region's side, else the lesion's.
            near = [(a, key) for a, key in anatomy if 0 <= a.start() - m.end() <= 3]  # "right putamen"
            near = near or [(a, key) for a, key in anatomy  # "Insular Cortex (right)"
                            if re.fullmatch(r"\s*\(\s*", s[a.end():m.start()]) and m.start() > a.end()]
            if not near and re.search(r"\|\s*$", raw[:m.start()]) and re.match(r"\s*\|", raw[m.end():]):
                near = [(a, key) for a, key in anatomy if a.end() <= m.start()][-1:]  # a row "| Insula | right |"
            if near and not near[0][1].startswith(("group:", "other:")):
                if negated:  # "the left putamen is spared": checked as that region's negation
                    continue
                self.add("laterality", f"{m.group()} {near[0][0].group()}" if m.start() < near[0][0].start()
                         else f"{near[0][0].group()} {m.group()}", side in f.regions.get(near[0][1], set()),
                         f"the findings do not place the {near[0][1]} on the {side}", off + m.start())
            elif negated:  # "not in the right hemisphere": only true if the findings put it elsewhere
                self.add("negation", m.group(), bool(f.sides) and side not in f.sides,
                         "the findings' lesion side is " + (", ".join(sorted(f.sides)) or "not given"),
                         off + m.start())
            else:
                self.lesion_side(m, side, s, off, near[0] if near else None, neg)
        for m in _UNILATERAL.finditer(s):
            if not _inside(m.start(), neg):
                self.add("laterality", m.group(), f.hemisphere in ("left", "right"),
                         "the findings' lesion side is " + (f.hemisphere or "not given"), off + m.start())

    def lesion_side(self, m: re.Match, side: str, s: str, off: int, near, neg):
        """A side said of the lesion as a whole ("left-sided", "a left frontal mass", "confined to the left") is
        checked against lesion.hemisphere, not against the union of its regions' sides: a bilateral lesion touches
        left regions, yet is not a left-sided lesion."""
        f = self.f
        group = near[1] if near and near[1].startswith("group:") else None
        exclusive = bool(_EXCLUSIVE.search(s[:m.start()]))
        of_lesion = exclusive or group is None or bool(_LESION_NOUN.match(s, near[0].end()))
        other = {"left": "right", "right": "left"}.get(side)
        if other and f.hemisphere and of_lesion:
            if exclusive:  # nothing at all on the other side
                ok = f.hemisphere == side and other not in f.sides
            elif f.hemisphere == "bilateral":  # only as one side of a two-sided description
                ok = any((o.group(1) or o.group(2) or "").lower().startswith((other, "bilateral", "both", "midline"))
                         and not _inside(o.start(), neg) for o in _SIDE.finditer(s))
            else:
                ok = f.hemisphere == side
            reason = ("the findings' lesion " + ("crosses the midline (bilateral)" if f.hemisphere == "bilateral"
                                                 else f"lies in the {f.hemisphere} hemisphere")
                      + (f" and touches the {other}" if exclusive and ok is False and other in f.sides else ""))
            self.add("laterality", m.group(), ok, reason, off + m.start())
        elif other and group:  # "the left frontal lobe": a side of that lobe's involved regions
            sides = {x for base, ss in f.regions.items() if group in _groups_of(base) for x in ss}
            self.add("laterality", f"{m.group()} {near[0].group()}", side in sides,
                     f"the findings do not place the {group[6:]} regions on the {side}", off + m.start())
        else:
            self.add("laterality", m.group(), side in f.sides,
                     "the findings' lesion side is " + (", ".join(sorted(f.sides)) or "not given"), off + m.start())

    # -- numbers and unmeasured findings --------------------------------------------------------------------
    def numbers(self, s: str, off: int, taken: list, anatomy: list):
        f = self.f
        listed = re.match(r"\s*(?:[-*+]\s+)?(\d+)[.)]\s", s)  # an ordered-list marker is not a claim
        coord_sentence = bool(_COORD_CONTEXT.search(s))
        taken = taken + [m.span() for q in self.quoted for m in q.finditer(s)]
        if coord_sentence:  # MNI coordinates: each axis against the centroid's, in order
            for m in _TRIPLE.finditer(s):
                values = [v for v in m.groups() if v is not None]
                c = self.f.centroid
                ok = c is not None and all(_matches(v, [x]) for v, x in zip(values, c))
                self.add("number", m.group(), ok, "the findings' MNI centroid is " + (
                    "not given" if c is None else ", ".join(f"{x:.0f}" for x in c)), off + m.start())
                taken.append(m.span())
        for m in _NUMBER.finditer(s):
            if listed and m.start(1) == listed.start(1):
                continue
            if any(a <= m.start() < b for a, b in taken):
                continue
            token, unit = m.group(1), _UNITS.get((m.group(3) or "").strip().lower(), "")
            quoted = token.lstrip("-−") in self.quoted_numbers
            if token.count(".") > 1:  # a version: only verbatim
                self.add("number", m.group(), quoted, "not in the findings", off + m.start())
                continue
            volume_word = (not unit and re.search(r"\bvolume\b[^.;\d]{0,20}$", s[:m.start()], re.I)
                           and not re.match(r"\s*(?:×|x\b|voxels?\b)", s[m.end():], re.I))  # "volume of 240 × 240"
            if unit == "ml" or volume_word:
                values, what = f.numbers["ml"], "volume"
            elif unit == "mm3":
                values, what = [1000 * v for v in f.numbers["ml"]], "volume (mm³)"
            elif unit == "%" or m.group(2):
                values, what = f.numbers["percent"], "percentage"
                of = s[m.end():m.end() + 40]
                region = next((key for a, key in anatomy if 0 < a.start() - m.end() <= 30 and
                               re.match(r"\s*of\s+(?:the\s+)?(?:(?:left|right)\s+)?$", s[m.end():a.start()], re.I)),
                              None)
                if re.match(r"\s*of\s+(?:the\s+|its\s+)?(?:lesion|tumou?r|volume)", of, re.I):
                    values, what = [v for sh in f.shares.values() for v in sh["lesion"]], "share of the lesion"
                elif region in f.shares:
                    values, what = f.shares[region]["region"], f"share of the {region}"
            elif unit == "mm":
                values, what = f.numbers["mm"], "size"
            else:
                values, what = f.numbers["any"], "value"
            self.add("number", m.group(), _matches(token, values) or (quoted and not unit),
                     f"no findings {what} rounds to {token}", off + m.start())

    def number_words(self, s: str, off: int):
        f = self.f
        for m in _WORD_NUMBER.finditer(s):
            value, unit = _word_value(m.group(1)), m.group(2).lower()
            values = (f.numbers["percent"] if "cent" in unit else f.numbers["any"] if unit.startswith("slice")
                      else f.numbers["ml"])
            self.add("number", m.group(), _matches(str(value), values), f"no findings value rounds to {value}",
                     off + m.start())

    def unmeasured(self, s: str, off: int, neg):
        # Whether the scan is contrast-enhanced is measured (the input check); enhancement of a lesion is not.
        scan_level = [m.span() for m in re.finditer(r"\bcontrast[- ]enhanced\b", s, re.I)]
        for start, end in scan_level:
            denied = _inside(start, neg)
            known = self.f.contrast_enhanced
            self.add("negation" if denied else "finding", s[start:end], known is not None and denied != known,
                     "the input check " + ("did not judge the contrast" if known is None else "found the scan "
                                          + ("contrast-enhanced" if known else "not contrast-enhanced")), off + start)
        for m in re.finditer(rf"\b(?:{_UNMEASURED})\b", s, re.I):
            if any(a <= m.start() < b for a, b in scan_level):
                continue
            if _inside(m.start(), neg):
                self.add("negation", m.group(), False, "the findings do not measure this", off + m.start())
            else:
                self.add("finding", m.group(), False, "the findings do not measure this", off + m.start())
        for m in re.finditer(r"\b(?:phantom|synthetic)\b", s, re.I):
            denied = _inside(m.start(), neg)
            self.add("negation" if denied else "finding", m.group(), denied != self.f.phantom,
                     "the input is " + ("a synthetic phantom" if self.f.phantom else "not a phantom"), off + m.start())
        for m in re.finditer(r"\b(?:real|actual|clinical)?\s*patient(?:'s)? (?:scan|data|study|examination)\b", s, re.I):
            if not _inside(m.start(), neg):
                self.add("finding", m.group(), not self.f.phantom, "the input is a synthetic phantom", off + m.start())
        for m in re.finditer(r"\bwarnings?\b|\bcaveats?\b", s, re.I):
            denied = _inside(m.start(), neg)
            self.add("negation" if denied else "finding", m.group(), denied != self.f.has_warnings,
                     "the findings carry " + ("warnings" if self.f.has_warnings else "no warnings"), off + m.start())
        outcome_stated = False
        for m in re.finditer(r"\bregistration\b[^.;]*?\b(fail\w*|succe\w+|unsuccessful)\b", s, re.I):
            outcome_stated = True
            failed = m.group(1).lower().startswith(("fail", "unsucc")) != _inside(m.start(1), neg)
            ok = self.f.converged is not None and failed != self.f.converged
            self.add("finding", m.group(1), ok, "the findings say registration " + (
                "did not run" if self.f.converged is None else "converged" if self.f.converged else
                "did not converge"), off + m.start(1))
        for m in re.finditer(r"\b(?:normal|unremarkable) (?:scan|study|examination|mri|brain)\b|\b(?:scan|study|"
                             r"examination|brain) (?:is|was|appears) (?:normal|unremarkable)\b", s, re.I):
            self.add("finding", m.group(), self.f.label == "no_tumor" and self.f.lesion_ml == 0,
                     f"the findings report a {self.f.lesion_ml:g} mL lesion ({self.f.label})", off + m.start())
        m = re.search(r"\bconverg\w*", s, re.I)
        if m and self.f.converged is not None and not outcome_stated:  # "failed to converge" was checked above
            denied = _inside(m.start(), neg)
            self.add("negation" if denied else "finding", m.group(), denied != self.f.converged,
                     "the findings say registration " + ("converged" if self.f.converged else "did not converge"),
                     off + m.start())


def verify(findings: dict, report: str) -> Verification:
    """Every claim found in `report`, each marked supported or not by `findings` (valid findings: as built by the
    pipeline or read by findings.read_findings)."""
    checker = _Checker(findings)
    for off, sentence in _sentences(report):
        plain = re.sub(r"[*_`#>|]", " ", sentence)  # Markdown emphasis, headings, table bars: same offsets
        edit = _COUNTERFACTUAL.search(plain)
        taken: list = []
        if _KEPT_ONLY.search(plain) and not edit:  # the region alone: "only" and "alone" deny nothing either
            neg = _negated_spans(plain)
            checker.counterfactual(plain, off, taken, kept_only=True)
        elif edit:  # "without the region" describes the edit: it denies nothing in the rest of the sentence
            a, b = edit.span("without") if edit.group("without") else (0, 0)
            neg = _negated_spans(plain[:a] + " " * (b - a) + plain[b:])
            checker.counterfactual(plain, off, taken)
        else:
            neg = _negated_spans(plain)
        checker.tumour(plain, off, neg, taken)
        anatomy = checker.anatomy(plain, off, neg, taken)
        checker.sides(plain, off, neg, anatomy, sentence)
        checker.unmeasured(plain, off, neg)
        checker.numbers(plain, off, taken, anatomy)
        checker.number_words(plain, off)
    return Verification(sorted(checker.claims, key=lambda c: c.start))

"""Static check of BrainXAI.ui against BrainXAI.py: every widget the module uses exists in the .ui with a class
that has what the module uses (its signals, properties and methods), and the .ui's own connections are valid.

The signal table (slicer_standins.SIGNALS) is taken from the headers: Qt's qabstractbutton.h, qcheckbox.h,
qcombobox.h, qlineedit.h, qlabel.h, qprogressbar.h, qtextedit.h, qtextbrowser.h, qabstractitemview.h, qtimer.h;
CTK's Libs/Widgets/ctkCollapsibleButton.h and ctkSliderWidget.h; Slicer's Libs/MRML/Widgets/qMRMLWidget.h,
qMRMLNodeComboBox.h and qMRMLTableView.h (Slicer v5.10.0).
"""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import slicer_standins as standins

MODULE = Path(__file__).resolve().parents[1] / "BrainXAI"
UI = MODULE / "Resources" / "UI" / "BrainXAI.ui"
QT_BUILTINS = {"QWidget", "QPushButton", "QCheckBox", "QComboBox", "QLineEdit", "QLabel", "QProgressBar",
               "QTextBrowser"}


def ui_classes() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ET.parse(UI).iter("widget")}


def _tree():
    return ast.parse((MODULE / "BrainXAI.py").read_text(encoding="utf-8"))


def timers() -> set[str]:
    """The widget's own QTimers: self.<name> = qt.QTimer()."""
    return {t.attr for node in ast.walk(_tree()) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and getattr(node.value.func, "attr", "") == "QTimer"
            for t in node.targets if isinstance(t, ast.Attribute)}


def module_uses():
    """(widget, member, signal or None, line) for every self.ui.<widget>.<member> in BrainXAI.py, and every
    connect() on a ui widget or one of the widget's timers."""
    tree = _tree()
    uses = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "ui"
                and isinstance(node.value.value.value, ast.Name) and node.value.value.value.id == "self"):
            uses.append((node.value.attr, node.attr, None, node.lineno))
    for node in ast.walk(tree):  # connect("signal(...)", slot) calls
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                and node.args and isinstance(node.args[0], ast.Constant)):
            target = node.func.value
            on_ui = isinstance(target, ast.Attribute) and getattr(target.value, "attr", None) == "ui"
            name = target.attr if on_ui or (isinstance(target, ast.Attribute) and target.attr in timers()) else None
            assert name is not None, f"line {node.lineno}: connect() on something this check does not know"
            uses.append((name, "connect", node.args[0].value, node.lineno))
    return uses


def test_every_widget_the_module_uses_exists_with_what_it_uses():
    classes = ui_classes()
    uses = module_uses()
    clocks = timers()
    assert clocks, "no QTimer found: the parser lost track of the module"
    widgets = {w for w, _, _, _ in uses if w not in clocks}
    assert widgets, "no self.ui.<widget> found: the parser lost track of the module"
    assert widgets <= set(classes), f"not in the .ui: {widgets - set(classes)}"
    problems = []
    for widget, member, signal, line in uses:
        cls = "QTimer" if widget in clocks else classes.get(widget)
        if cls is None:
            continue
        stand_in = standins.WIDGETS.get(cls) or (standins.QTimer if cls == "QTimer" else None)
        assert stand_in is not None, f"{cls} has no entry in the signal table"
        if signal is not None:
            if signal not in standins.signals_of(cls):
                problems.append(f"line {line}: {widget} ({cls}) has no signal {signal}")
            continue
        has = (member in stand_in.__dict__ or any(member in vars(c) for c in stand_in.__mro__)
               or any(member in standins.PROPERTIES.get(c, {}) for c in standins.lineage(cls))
               or member in stand_in._computed or member in getattr(stand_in, "_readonly", ()))
        if not has:
            problems.append(f"line {line}: {widget} ({cls}) has no property or method '{member}'")
    assert not problems, "\n".join(problems)


def test_the_modules_connections_are_the_ones_it_needs():
    """Every signal the panel depends on is connected (a dropped connect is a dead control)."""
    connected = {(w, s) for w, member, s, _ in module_uses() if member == "connect"}
    needed = {("applyButton", "clicked(bool)"), ("inputSelector", "currentNodeChanged(vtkMRMLNode*)"),
              ("methodComboBox", "currentIndexChanged(int)"), ("thresholdSlider", "valueChanged(double)"),
              ("mniCheckBox", "toggled(bool)"), ("jumpButton", "clicked(bool)"), ("exportButton", "clicked(bool)"),
              ("llmBackendComboBox", "currentIndexChanged(int)"), ("llmEndpointLineEdit", "textChanged(QString)"),
              ("cloudCheckBox", "toggled(bool)"), ("allMethodsCheckBox", "toggled(bool)"),
              ("enhanceCheckBox", "toggled(bool)"),
              ("keepWarmCheckBox", "toggled(bool)"), ("timer", "timeout()"), ("thresholdTimer", "timeout()")}
    assert needed <= connected, needed - connected


def test_ui_file_connections_custom_widgets_and_classes():
    root = ET.parse(UI).getroot()
    classes = ui_classes()
    custom = {c.findtext("class"): c.findtext("extends") for c in root.iter("customwidget")}
    for cls in set(classes.values()):
        assert cls in QT_BUILTINS or cls in custom, f"{cls} needs a <customwidget> entry"
        assert cls in standins.WIDGETS, f"{cls}: add its header's signals to the table"
    for c in root.iter("connection"):
        sender, receiver = classes[c.findtext("sender")], classes[c.findtext("receiver")]
        assert c.findtext("signal") in standins.signals_of(sender), (sender, c.findtext("signal"))
        slot = c.findtext("slot").split("(")[0]
        assert hasattr(standins.WIDGETS[receiver], slot), (receiver, slot)
    # the MRML widgets get the scene through the top-level qMRMLWidget's mrmlSceneChanged
    fed = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert {n for n, cls in classes.items() if cls in ("qMRMLNodeComboBox", "qMRMLTableView")} <= fed
    assert root.find("widget").get("class") == "qMRMLWidget"


def test_the_check_catches_a_wrong_signal_and_a_missing_widget(tmp_path, monkeypatch):
    """The checks above can fail: a module that connects a signal its widget lacks, or uses a widget the .ui lacks."""
    import sys

    import pytest

    broken = tmp_path / "BrainXAI"
    broken.mkdir()
    text = (MODULE / "BrainXAI.py").read_text(encoding="utf-8")
    (broken / "BrainXAI.py").write_text(text.replace('"currentIndexChanged(int)", self.onMethodChanged',
                                                     '"currentIndexChanged(QString)", self.onMethodChanged')
                                        .replace("self.ui.jumpButton.connect", "self.ui.jumpToButton.connect"),
                                        encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "MODULE", broken)

    with pytest.raises(AssertionError, match="jumpToButton"):
        test_every_widget_the_module_uses_exists_with_what_it_uses()
    (broken / "BrainXAI.py").write_text(text.replace('"currentIndexChanged(int)", self.onMethodChanged',
                                                     '"currentIndexChanged(QString)", self.onMethodChanged'),
                                        encoding="utf-8")
    with pytest.raises(AssertionError, match=r"currentIndexChanged\(QString\)"):
        test_every_widget_the_module_uses_exists_with_what_it_uses()

"""What a Slicer application would provide and slicer-core does not: stand-ins, recording what the module does.

slicer-core (PyPI) is Slicer's MRML, Segmentations, Colors and Terminologies logic plus Slicer's own
`slicer/util.py`, without the GUI. Everything below the widget layer is the real thing in these tests: the scene,
nodes, storage, subject hierarchy, slicer.util (loadUI, childWidgetVariables, getNodesByClass, settingsValue,
toBool and VTKObservationMixin run as Slicer ships them). Stood in, because it does not exist here:

- `qt`: the widgets named in the .ui file (built from it by a QUiLoader stand-in, its <connections> included),
  QTimer, QSettings, QFile, QFileDialog. A widget stand-in accepts only the signals and properties its class
  declares (SIGNALS / PROPERTIES below, taken from the Qt, CTK and Slicer headers cited there), so a misspelt
  signal, property or slot fails here; real PythonQt would silently accept an unknown attribute.
- `slicer.app` (events, module manager, testing flag) and Slicer's dialogs (errorDisplay, confirmOkCancelDisplay,
  showStatusMessage), which record what they were asked to show.
- `slicer.ScriptedLoadableModule` and `slicer.parameterNodeWrapper`: pure Python in Slicer (Base/Python/slicer)
  but they import qt and ctk at load time. The stand-ins reproduce the parts the module uses, over the real
  vtkMRMLScriptedModuleNode: the widget's parent/layout/resourcePath, the logic's singleton parameter node
  (ScriptedLoadableModule.py), and typed parameters stored as Slicer's serializers store them (str as is,
  float/int as str(value), bool as "True"/"False", nodes as a node reference; parameterNodeWrapper/serializers.py)
  with the Choice / WithinRange / IsInstance validators raising as Slicer's do (validators.py). All Slicer v5.10.0.
"""

from __future__ import annotations

import inspect
import types
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

# ---------------------------------------------------------------------------------------------------------- tables
# Signals each class declares (Qt 5.15 / Qt 6 public headers; CTK commontk/CTK@868d56c; Slicer v5.10.0), with
# the inherited ones added through BASES. These are what PythonQt's connect() accepts.
SIGNALS: dict[str, set[str]] = {
    "QObject": {"destroyed()", "destroyed(QObject*)", "objectNameChanged(QString)"},
    "QWidget": {"customContextMenuRequested(QPoint)", "windowTitleChanged(QString)"},  # qwidget.h
    "QAbstractButton": {"clicked(bool)", "clicked()", "pressed()", "released()", "toggled(bool)"},  # qabstractbutton.h
    "QPushButton": set(),
    "QCheckBox": {"stateChanged(int)"},  # qcheckbox.h (Qt 6.7 adds checkStateChanged(Qt::CheckState))
    "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)",  # qcombobox.h
                  "textActivated(QString)", "highlighted(int)", "editTextChanged(QString)"},
    "QLineEdit": {"textChanged(QString)", "textEdited(QString)", "editingFinished()", "returnPressed()",  # qlineedit.h
                  "cursorPositionChanged(int,int)", "selectionChanged()"},
    "QLabel": {"linkActivated(QString)", "linkHovered(QString)"},  # qlabel.h
    "QProgressBar": {"valueChanged(int)"},  # qprogressbar.h
    "QTextEdit": {"textChanged()", "selectionChanged()", "cursorPositionChanged()"},  # qtextedit.h
    "QTextBrowser": {"anchorClicked(QUrl)", "sourceChanged(QUrl)", "highlighted(QUrl)"},  # qtextbrowser.h
    "QTableView": {"clicked(QModelIndex)", "doubleClicked(QModelIndex)"},  # qabstractitemview.h
    "QTimer": {"timeout()"},  # qtimer.h
    "ctkCollapsibleButton": {"contentsCollapsed(bool)"},  # Libs/Widgets/ctkCollapsibleButton.h
    "ctkSliderWidget": {"valueChanged(double)", "valueIsChanging(double)", "decimalsChanged(int)"},  # ctkSliderWidget.h
    "qMRMLWidget": {"mrmlSceneChanged(vtkMRMLScene*)"},  # Libs/MRML/Widgets/qMRMLWidget.h
    "qMRMLNodeComboBox": {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)",  # qMRMLNodeComboBox.h
                          "currentNodeIDChanged(QString)", "nodeActivated(vtkMRMLNode*)", "nodeAdded(vtkMRMLNode*)",
                          "nodeAddedByUser(vtkMRMLNode*)", "nodeAboutToBeRemoved(vtkMRMLNode*)",
                          "mrmlSceneChanged(vtkMRMLScene*)"},
    "qMRMLTableView": set(),  # Libs/MRML/Widgets/qMRMLTableView.h
}
BASES = {
    "QObject": None, "QWidget": "QObject", "QAbstractButton": "QWidget", "QPushButton": "QAbstractButton",
    "QCheckBox": "QAbstractButton", "QComboBox": "QWidget", "QLineEdit": "QWidget", "QLabel": "QWidget",
    "QProgressBar": "QWidget", "QTextEdit": "QWidget", "QTextBrowser": "QTextEdit", "QTableView": "QWidget",
    "QTimer": "QObject", "ctkCollapsibleButton": "QAbstractButton", "ctkSliderWidget": "QWidget",
    "qMRMLWidget": "QWidget", "qMRMLNodeComboBox": "QWidget", "qMRMLTableView": "QTableView",
}
# Q_PROPERTYs the stand-ins hold, with Qt's defaults (same headers).
PROPERTIES: dict[str, dict[str, object]] = {
    "QObject": {"objectName": ""},
    "QWidget": {"enabled": True, "visible": True, "toolTip": "", "minimumSize": None, "styleSheet": ""},
    "QAbstractButton": {"text": "", "checkable": False, "checked": False},
    "QCheckBox": {"checkable": True},
    "QComboBox": {},  # currentIndex, currentText, currentData, count: computed
    "QLineEdit": {"text": "", "placeholderText": "", "readOnly": False},
    "QLabel": {"text": "", "wordWrap": False},
    "QProgressBar": {"value": 0, "minimum": 0, "maximum": 100, "format": "%p%", "textVisible": True},
    "QTextEdit": {"html": "", "readOnly": False},
    "ctkCollapsibleButton": {"collapsed": False, "checkable": True, "checked": True},
    "ctkSliderWidget": {"value": 0.0, "minimum": 0.0, "maximum": 99.0, "decimals": 2, "singleStep": 1.0,
                        "tracking": True, "spinBoxVisible": True},
    "qMRMLNodeComboBox": {"nodeTypes": (), "noneEnabled": False, "addEnabled": True, "removeEnabled": True,
                          "renameEnabled": False, "showChildNodeTypes": True, "showHidden": False},
}


def lineage(cls_name: str) -> list[str]:
    out = []
    while cls_name:
        out.append(cls_name)
        cls_name = BASES[cls_name]
    return out


def signals_of(cls_name: str) -> set[str]:
    return set().union(*(SIGNALS[c] for c in lineage(cls_name)))


# ---------------------------------------------------------------------------------------------------------- qt
class QObject:
    """A widget stand-in: declared signals and properties only; connect() checks the signature."""

    qt_class = "QObject"
    _computed: tuple[str, ...] = ()

    def __init__(self, name: str = ""):
        object.__setattr__(self, "_props", {})
        for c in reversed(lineage(self.qt_class)):
            self._props.update(PROPERTIES.get(c, {}))
        object.__setattr__(self, "_slots", {})
        object.__setattr__(self, "_children", [])
        object.__setattr__(self, "name", name)  # PythonQt exposes objectName as .name too (slicer.util uses it)
        self._props["objectName"] = name

    def __getattr__(self, key):
        props = object.__getattribute__(self, "_props")
        if key in props:
            return props[key]
        raise AttributeError(f"{self.qt_class} '{self.name}' has no property or method '{key}'")

    def __setattr__(self, key, value):
        if key.startswith("_") or key in type(self)._computed:
            object.__setattr__(self, key, value)
        elif key in self._props:
            self._set(key, value)
        else:
            raise AttributeError(f"{self.qt_class} '{self.name}' has no property '{key}'")

    def _set(self, key, value):
        self._props[key] = value

    def className(self):
        return self.qt_class

    def children(self):
        return list(self._children)

    def property(self, key):
        return self._props.get(key)

    def connect(self, signal: str, slot) -> None:
        if signal not in signals_of(self.qt_class):
            raise AttributeError(f"{self.qt_class} '{self.name}' has no signal {signal}")
        if not callable(slot):
            raise TypeError(f"slot for {signal} is not callable")
        self._slots.setdefault(signal, []).append(slot)

    def disconnect(self, signal: str, slot) -> None:
        self._slots.get(signal, []).remove(slot)

    def connections(self, signal: str) -> list:
        return list(self._slots.get(signal, []))

    def emit(self, signal: str, *args) -> None:
        """PythonQt calls a slot with as many of the signal's arguments as the slot takes."""
        assert signal in signals_of(self.qt_class), signal
        for slot in list(self._slots.get(signal, [])):
            try:
                params = [p for p in inspect.signature(slot).parameters.values()
                          if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
                n = len(params) if not any(p.kind == p.VAR_POSITIONAL for p in
                                           inspect.signature(slot).parameters.values()) else len(args)
            except (TypeError, ValueError):
                n = len(args)
            slot(*args[:n])


class QWidget(QObject):
    qt_class = "QWidget"

    def setVisible(self, visible):
        self._props["visible"] = bool(visible)

    def isVisible(self):
        return self._props["visible"]

    def setEnabled(self, enabled):
        self._props["enabled"] = bool(enabled)

    def setToolTip(self, text):
        self._props["toolTip"] = text


class QAbstractButton(QWidget):
    qt_class = "QAbstractButton"

    def _set(self, key, value):
        old = self._props.get(key)
        self._props[key] = value
        if key == "checked" and self._props["checkable"] and bool(old) != bool(value):
            self.emit("toggled(bool)", bool(value))

    def click(self):
        """What a user's click does: toggles a checkable button, then clicked(bool)."""
        if not self._props["enabled"]:
            return
        if self._props["checkable"]:
            self.checked = not self._props["checked"]
        self.emit("clicked(bool)", bool(self._props["checked"]))
        self.emit("clicked()")


class QPushButton(QAbstractButton):
    qt_class = "QPushButton"


class QCheckBox(QAbstractButton):
    qt_class = "QCheckBox"


class ctkCollapsibleButton(QAbstractButton):
    qt_class = "ctkCollapsibleButton"


class QComboBox(QWidget):
    qt_class = "QComboBox"
    _computed = ("currentIndex",)
    _readonly = ("currentText", "currentData", "count")

    def __init__(self, name=""):
        super().__init__(name)
        object.__setattr__(self, "_items", [])
        object.__setattr__(self, "_index", -1)

    def __getattr__(self, key):
        if key == "currentIndex":
            return self._index
        if key == "currentText":
            return self._items[self._index][0] if self._index >= 0 else ""
        if key == "currentData":
            return self._items[self._index][1] if self._index >= 0 else None
        if key == "count":
            return len(self._items)
        return super().__getattr__(key)

    def __setattr__(self, key, value):
        if key == "currentIndex":
            self.setCurrentIndex(value)
        else:
            super().__setattr__(key, value)

    def setCurrentIndex(self, index):
        index = index if -1 <= index < len(self._items) else -1
        if index != self._index:
            object.__setattr__(self, "_index", index)
            self.emit("currentIndexChanged(int)", index)
            self.emit("currentTextChanged(QString)", self.currentText)

    def addItem(self, text, data=None):
        self._items.append((text, data))
        if self._index == -1:  # Qt makes the first item current
            self.setCurrentIndex(0)

    def clear(self):
        self._items.clear()
        self.setCurrentIndex(-1)

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self._items) if d == data), -1)

    def itemData(self, index):
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def itemText(self, index):
        return self._items[index][0] if 0 <= index < len(self._items) else ""

    def user_select(self, data):
        """What a user's choice in the list does."""
        index = self.findData(data)
        assert index >= 0, data
        if self._props["enabled"]:
            self.setCurrentIndex(index)
            self.emit("activated(int)", index)


class QLineEdit(QWidget):
    qt_class = "QLineEdit"

    def _set(self, key, value):
        old = self._props.get(key)
        self._props[key] = value
        if key == "text" and old != value:
            self.emit("textChanged(QString)", value)

    def user_type(self, text):
        if self._props["enabled"]:
            self.text = text
            self.emit("textEdited(QString)", text)
            self.emit("editingFinished()")


class QLabel(QWidget):
    qt_class = "QLabel"


class QProgressBar(QWidget):
    qt_class = "QProgressBar"

    def setFormat(self, text):
        self._props["format"] = text

    def setValue(self, value):
        self.value = value


class QTextEdit(QWidget):
    qt_class = "QTextEdit"

    def setHtml(self, text):
        self._props["html"] = text

    def toHtml(self):
        return self._props["html"]


class QTextBrowser(QTextEdit):
    qt_class = "QTextBrowser"


class QTableView(QWidget):
    qt_class = "QTableView"


class ctkSliderWidget(QWidget):
    qt_class = "ctkSliderWidget"

    def _set(self, key, value):
        if key == "value":  # clamped and rounded to the shown decimals, as ctkSliderWidget's value proxy does
            value = round(min(max(float(value), self._props["minimum"]), self._props["maximum"]),
                          int(self._props["decimals"]))
            old = self._props["value"]
            self._props["value"] = value
            if value != old:
                self.emit("valueChanged(double)", value)
        else:
            self._props[key] = value

    def user_release(self, value):
        """A drag ending at `value` (tracking off: one valueChanged on release)."""
        if self._props["enabled"]:
            self.value = value


class qMRMLWidget(QWidget):
    qt_class = "qMRMLWidget"

    def __init__(self, name=""):
        super().__init__(name)
        object.__setattr__(self, "_scene", None)

    def setMRMLScene(self, scene):
        self._scene = scene
        self.emit("mrmlSceneChanged(vtkMRMLScene*)", scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(qMRMLWidget):
    qt_class = "qMRMLNodeComboBox"

    def __init__(self, name=""):
        super().__init__(name)
        object.__setattr__(self, "_node", None)

    def _accepts(self, node) -> bool:
        if node is None or self._scene is None or node.GetScene() is not self._scene:
            return False
        types_ = self._props["nodeTypes"]
        if self._props["showChildNodeTypes"]:
            return any(node.IsA(t) for t in types_)
        return node.GetClassName() in types_  # subclasses (a label map for a scalar volume) are not listed

    def currentNode(self):
        return self._node

    def currentNodeID(self):
        return self._node.GetID() if self._node is not None else ""

    def setCurrentNode(self, node):
        node = node if self._accepts(node) else None
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)
            self.emit("currentNodeChanged(bool)", node is not None)

    def user_select(self, node):
        assert self._accepts(node), f"{node.GetName()} is not offered by {self.name}"
        if self._props["enabled"]:
            self.setCurrentNode(node)
            self.emit("nodeActivated(vtkMRMLNode*)", node)


class qMRMLTableView(QTableView):
    qt_class = "qMRMLTableView"

    def __init__(self, name=""):
        super().__init__(name)
        object.__setattr__(self, "_scene", None)
        object.__setattr__(self, "_table", None)

    def setMRMLScene(self, scene):
        self._scene = scene

    def setMRMLTableNode(self, node):
        self._table = node

    def mrmlTableNode(self):
        return self._table


class QTimer(QObject):
    qt_class = "QTimer"

    def __init__(self):
        super().__init__("")
        object.__setattr__(self, "_active", False)
        object.__setattr__(self, "_interval", 0)
        object.__setattr__(self, "_single", False)

    def setInterval(self, ms):
        self._interval = ms

    def setSingleShot(self, single):
        self._single = bool(single)

    def isSingleShot(self):
        return self._single

    def interval(self):
        return self._interval

    def start(self, ms=None):
        self._active = True

    def stop(self):
        self._active = False

    def isActive(self):
        return self._active

    def fire(self):
        """The event loop's tick: timeout() if running (a single-shot timer stops first, as Qt's does)."""
        if self._active:
            if self._single:
                self._active = False
            self.emit("timeout()")


class QVBoxLayout:
    def __init__(self):
        self.widgets = []

    def addWidget(self, widget):
        self.widgets.append(widget)


class QSettings:
    store: dict = {}

    def value(self, key, default=None):
        return self.store.get(key, default)

    def contains(self, key):
        return key in self.store

    def setValue(self, key, value):
        self.store[key] = value


class QFileDialog:
    answer = ""  # what the user picks; "" is Cancel
    asked: list = []

    @classmethod
    def getExistingDirectory(cls, parent=None, caption="", directory=""):
        cls.asked.append(caption)
        return cls.answer


class QFile:
    ReadOnly = 1

    def __init__(self, path):
        self.path = Path(path)

    def exists(self):
        return self.path.is_file()

    def open(self, mode):
        return True


WIDGETS = {c.qt_class: c for c in (QWidget, QPushButton, QCheckBox, QComboBox, QLineEdit, QLabel, QProgressBar,
                                   QTextBrowser, ctkCollapsibleButton, ctkSliderWidget, qMRMLWidget,
                                   qMRMLNodeComboBox, qMRMLTableView)}


def _value(prop: ET.Element):
    v = prop[0]
    if v.tag == "bool":
        return v.text == "true"
    if v.tag == "double":
        return float(v.text)
    if v.tag == "number":
        return int(v.text)
    if v.tag == "stringlist":
        return tuple(s.text for s in v.iter("string"))
    if v.tag == "string":
        return v.text or ""
    return None  # size, enum: not used by the module


class QUiLoader:
    """Builds the stand-in widget tree of a .ui file: classes, names, properties, the <connections>."""

    def load(self, qfile: QFile):
        tree = ET.parse(qfile.path)
        named = {}

        def build(element: ET.Element):
            cls = element.get("class")
            if cls not in WIDGETS:
                raise KeyError(f"no stand-in for {cls} ({element.get('name')}): add it with its header's signals")
            widget = WIDGETS[cls](element.get("name"))
            named[widget.name] = widget
            for prop in element.findall("property"):
                value = _value(prop)
                key = prop.get("name")
                if value is None or key in ("minimumSize", "orientation"):
                    continue
                if key not in widget._props and key not in type(widget)._computed:
                    raise AttributeError(f"{cls} has no property '{key}' (from the .ui)")
                setattr(widget, key, value)
            for child in element.iter("widget"):  # direct widget descendants, through layouts
                if child is element or _widget_parent(element, child) is not element:
                    continue
                widget._children.append(build(child))
            return widget

        root = build(tree.getroot().find("widget"))
        for c in tree.getroot().iter("connection"):
            sender, receiver = named[c.findtext("sender")], named[c.findtext("receiver")]
            slot_name = c.findtext("slot").split("(")[0]
            slot = getattr(receiver, slot_name)  # AttributeError if the receiver has no such slot
            sender.connect(c.findtext("signal"), slot)
        return root


def _widget_parent(root: ET.Element, target: ET.Element):
    """The nearest <widget> ancestor of target below root."""
    stack = [(root, root)]
    while stack:
        element, owner = stack.pop()
        for child in element:
            if child is target:
                return owner
            stack.append((child, child if child.tag == "widget" else owner))
    return None


def qt_module() -> types.ModuleType:
    qt = types.ModuleType("qt")
    for cls in (QObject, QWidget, QPushButton, QCheckBox, QComboBox, QLineEdit, QLabel, QProgressBar, QTextBrowser,
                QTimer, QVBoxLayout, QSettings, QFileDialog, QFile, QUiLoader):
        setattr(qt, cls.__name__, cls)
    return qt


# ---------------------------------------------------------------------------------------------------------- slicer
class ModuleManager:
    def __init__(self):
        self.connected = []

    def connect(self, signal, slot):
        assert signal == "moduleAboutToBeUnloaded(QString)", signal  # qSlicerModuleManager.h
        self.connected.append(slot)

    def disconnect(self, signal, slot):
        self.connected.remove(slot)


class App:
    """slicer.app: what the module and slicer.util ask of qSlicerApplication."""

    applicationName = "Slicer"

    def __init__(self):
        self.events = 0
        self._modules = ModuleManager()

    def processEvents(self):
        self.events += 1

    def moduleManager(self):
        return self._modules

    def testingEnabled(self):
        return False

    def topLevelWidgets(self):
        return []


class Dialogs:
    """slicer.util's dialogs, recorded; confirm answers what the test set."""

    def __init__(self):
        self.errors: list[str] = []
        self.statuses: list[str] = []
        self.confirms: list[str] = []
        self.confirm_answer = True

    def errorDisplay(self, text, windowTitle=None, parent=None, **kwargs):
        assert "\n" not in text, f"an error must be one line: {text!r}"
        self.errors.append(text)

    def confirmOkCancelDisplay(self, text, windowTitle=None, parent=None, **kwargs):
        self.confirms.append(text)
        return self.confirm_answer

    def showStatusMessage(self, message, duration=0):
        self.statuses.append(message)
        return True


class ModuleWidgetParent(qMRMLWidget):
    """The qSlicerScriptedLoadableModuleWidget a scripted module's widget is given as parent."""

    qt_class = "qMRMLWidget"
    _computed = ("isEntered",)

    def __init__(self):
        super().__init__("BrainXAIParent")
        object.__setattr__(self, "_layout", QVBoxLayout())
        object.__setattr__(self, "isEntered", False)

    def layout(self):
        return self._layout


def scripted_loadable_module(slicer, module_path: str) -> types.ModuleType:
    """slicer.ScriptedLoadableModule's base classes, as far as the module uses them (v5.10.0)."""
    m = types.ModuleType("slicer.ScriptedLoadableModule")
    import os
    import unittest

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = self.__class__.__name__
            parent.title, parent.categories, parent.dependencies = "", [], []

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(module_path), "Resources", filename)

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            super().__init__()  # as Slicer's: this is what initialises VTKObservationMixin in the module's widget
            self.moduleName = self.__class__.__name__[:-len("Widget")]
            self.developerMode = False
            self.parent = parent
            self.layout = self.parent.layout()
            slicer.app.moduleManager().connect("moduleAboutToBeUnloaded(QString)", self._onModuleAboutToBeUnloaded)

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(module_path), "Resources", filename)

        def setup(self):
            pass  # the developer section (Reload / Reload and Test) is shown only in developer mode

        reloads: list = []

        def onReload(self):  # Slicer's calls slicer.util.reloadScriptedModule(self.moduleName)
            self.reloads.append(self.moduleName)

        def cleanup(self):
            pass

        def _onModuleAboutToBeUnloaded(self, moduleName):
            if moduleName == self.moduleName:
                self.cleanup()

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = self.__class__.__name__[:-len("Logic")]
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
            return slicer.mrmlScene.AddNode(self.createParameterNode())

        def createParameterNode(self):
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        shown: list = []

        def delayDisplay(self, message, msec=1000):
            self.shown.append(message)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(m, cls.__name__, cls)
    return m


def parameter_node_wrapper(slicer) -> types.ModuleType:
    """slicer.parameterNodeWrapper's typed access to a vtkMRMLScriptedModuleNode (serializers.py, validators.py)."""
    m = types.ModuleType("slicer.parameterNodeWrapper")

    class Choice:
        def __init__(self, choices):
            self.choices = choices

        def validate(self, value):
            if value not in self.choices:
                raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")

    class WithinRange:
        def __init__(self, minimum, maximum):
            self.minimum, self.maximum = minimum, maximum

        def validate(self, value):
            if not self.minimum <= value <= self.maximum:
                raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")

    def field(name, annotation, default):
        validators = []
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *validators = typing.get_args(annotation)
        is_node = isinstance(annotation, type) and issubclass(annotation, slicer.vtkMRMLNode)
        allowed = {float: (int, float), int: int, bool: bool, str: str}.get(annotation, annotation)

        def write(node, value):
            if is_node:
                if value is not None and not isinstance(value, annotation):
                    raise TypeError(f"Value must be of type '{annotation}', is type '{type(value)}'")
                node.SetParameter(name, "")
                node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                return
            if value is None:
                raise ValueError("Value must not be None")
            if not isinstance(value, allowed):
                raise TypeError(f"Value must be of type '{allowed}', is type '{type(value)}' value '{value}'")
            for v in validators:
                v.validate(value)
            node.SetParameter(name, ("True" if value else "False") if annotation is bool else str(value))

        def read(node):
            if not node.HasParameter(name):
                write(node, default)
            if is_node:
                return node.GetNodeReference(name)
            text = node.GetParameter(name)
            return text == "True" if annotation is bool else annotation(text)

        return property(lambda self: read(self.parameterNode), lambda self, value: write(self.parameterNode, value))

    def parameterNodeWrapper(cls):
        """The class itself becomes the wrapper (wrapper.py _processClass), with the node's observer methods."""
        hints = typing.get_type_hints(cls, include_extras=True)
        for name, annotation in hints.items():
            setattr(cls, name, field(name, annotation, getattr(cls, name, None)))

        def __init__(self, parameterNode):
            assert parameterNode is not None
            self.parameterNode = parameterNode
            for name in hints:  # every parameter is written once, with its default (wrapper.py _initMethod)
                getattr(self, name)

        cls.__init__ = __init__
        cls.allParameters = dict(hints)
        cls.StartModify = lambda self: self.parameterNode.StartModify()
        cls.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
        cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
            event, callback, priority)
        cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
        cls.Modified = lambda self: self.parameterNode.Modified()
        return cls

    m.parameterNodeWrapper, m.Choice, m.WithinRange = parameterNodeWrapper, Choice, WithinRange
    return m

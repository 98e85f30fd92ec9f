"""Static checks of the Slicer extension files (the Slicer application cannot run here).

The module file is compiled and parsed with ``ast`` (never imported: it needs Slicer's Qt), the .ui is parsed as
XML, and the CMake files are read as text: every widget the code uses exists, every GUI-bound parameter exists,
and CMake installs every file of the module and of the ``lunglesionai`` package.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO_ROOT

MODULE_DIR = REPO_ROOT / "LungLesionAI"
MODULE_FILE = MODULE_DIR / "LungLesionAI.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LungLesionAI.ui"
ICON_FILE = MODULE_DIR / "Resources" / "Icons" / "LungLesionAI.png"
PACKAGE_DIR = MODULE_DIR / "Logic" / "lunglesionai"
LIB_DIR = MODULE_DIR / "LungLesionAILib"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
TOP_CMAKE = REPO_ROOT / "CMakeLists.txt"

#: Which Qt widget class a parameter-node field type binds to (parameterNodeWrapper GUI connectors).
WIDGET_FOR_TYPE = {
    "bool": {"QCheckBox"},
    "float": {"ctkSliderWidget", "QDoubleSpinBox"},
    "int": {"QSpinBox", "QSlider"},
    "str": {"QComboBox", "QLineEdit"},
    "vtkMRMLScalarVolumeNode": {"qMRMLNodeComboBox"},
    "vtkMRMLTableNode": {"qMRMLNodeComboBox"},
}
#: Qt's own widget classes the .ui may use without declaring them as custom widgets.
QT_WIDGETS = {"QWidget", "QLabel", "QCheckBox", "QComboBox", "QPushButton", "QProgressBar", "QLineEdit",
              "QSpinBox", "QDoubleSpinBox", "QSlider", "QTableView", "QGroupBox", "QFrame"}
#: Calls that change a MRML scene: they belong in the Logic, never in the Widget.
MRML_CHANGING_CALLS = {"AddNewNodeByClass", "AddNode", "RemoveNode", "CreateDefaultDisplayNodes",
                       "SetNodeReferenceID", "AddControlPoint", "AddEmptySegment", "SetBinaryLabelmapToSegment",
                       "AddColumn", "SetAttribute", "Clear"}


@pytest.fixture(scope="module")
def module_ast() -> ast.Module:
    source = MODULE_FILE.read_text(encoding="utf-8")
    return ast.parse(compile(source, str(MODULE_FILE), "exec", flags=ast.PyCF_ONLY_AST), str(MODULE_FILE))


@pytest.fixture(scope="module")
def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()  # raises on malformed XML
    assert root.tag == "ui"
    return {w.get("name"): w for w in root.iter("widget")}


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _parameter_fields(tree: ast.Module) -> dict[str, str]:
    """Field name -> base type name of the @parameterNodeWrapper class."""
    cls = _classes(tree)["LungLesionAIParameterNode"]
    fields = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            annotation = stmt.annotation
            if isinstance(annotation, ast.Subscript):  # Annotated[float, WithinRange(...)]
                annotation = annotation.slice.elts[0]
            fields[stmt.target.id] = ast.unparse(annotation)
    return fields


def test_module_compiles_with_py_compile(tmp_path):
    import py_compile

    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "LungLesionAI.pyc"), doraise=True)


def test_module_has_the_five_classes(module_ast):
    classes = _classes(module_ast)
    expected_bases = {
        "LungLesionAI": "ScriptedLoadableModule",
        "LungLesionAIWidget": "ScriptedLoadableModuleWidget",
        "LungLesionAILogic": "ScriptedLoadableModuleLogic",
        "LungLesionAITest": "ScriptedLoadableModuleTest",
    }
    for name, base in expected_bases.items():
        assert base in [ast.unparse(b) for b in classes[name].bases], name
    assert "VTKObservationMixin" in [ast.unparse(b) for b in classes["LungLesionAIWidget"].bases]
    decorators = [ast.unparse(d) for d in classes["LungLesionAIParameterNode"].decorator_list]
    assert decorators == ["parameterNodeWrapper"]
    logic_methods = {n.name for n in classes["LungLesionAILogic"].body if isinstance(n, ast.FunctionDef)}
    assert "process" in logic_methods


def test_module_imports_the_package_lazily(module_ast):
    top_level = [n for n in module_ast.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top_level if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] == "lunglesionai"], "import lunglesionai inside functions"


def test_every_ui_attribute_used_exists_in_the_ui(module_ast, ui_widgets):
    used = {
        node.attr
        for node in ast.walk(module_ast)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }
    assert used, "the widget should use self.ui.<name>"
    assert used <= set(ui_widgets), f"missing in the .ui: {sorted(used - set(ui_widgets))}"


def test_ui_has_the_expected_widgets(ui_widgets):
    expected = {
        "inputsCollapsibleButton": "ctkCollapsibleButton",
        "inputVolumeSelector": "qMRMLNodeComboBox",
        "runDetectionCheckBox": "QCheckBox",
        "runFpReductionCheckBox": "QCheckBox",
        "runSegmentationCheckBox": "QCheckBox",
        "runGradingCheckBox": "QCheckBox",
        "runLesionsCheckBox": "QCheckBox",
        "deviceComboBox": "QComboBox",
        "minScoreSliderWidget": "ctkSliderWidget",
        "applyButton": "QPushButton",
        "progressBar": "QProgressBar",
        "statusLabel": "QLabel",
        "resultTableSelector": "qMRMLNodeComboBox",
        "findingsTableView": "qMRMLTableView",
        "acceptButton": "QPushButton",
        "rejectButton": "QPushButton",
        "segmentEditorButton": "QPushButton",
        "updateMeasurementsButton": "QPushButton",
        "saveReportButton": "QPushButton",
        "loadResultsButton": "QPushButton",
        "applyAxisEditButton": "QPushButton",
        "indicationComboBox": "QComboBox",
        "patientAgeSpinBox": "QDoubleSpinBox",
        "patientSexComboBox": "QComboBox",
        "familyHistoryComboBox": "QComboBox",
        "examSummaryLabel": "QLabel",
        "priorVolumeSelector": "qMRMLNodeComboBox",
        "intervalDaysSpinBox": "QDoubleSpinBox",
    }
    assert {name: ui_widgets[name].get("class") for name in expected} == expected
    inputs = list(ui_widgets["inputsCollapsibleButton"].iter("widget"))
    assert ui_widgets["priorVolumeSelector"] in inputs and ui_widgets["intervalDaysSpinBox"] in inputs
    prior_props = {p.get("name"): p for p in ui_widgets["priorVolumeSelector"].iter("property")}
    assert prior_props["noneEnabled"].findtext("bool") == "true"  # no prior = no comparison
    node_types = [s.text for s in ui_widgets["inputVolumeSelector"].iter("string")]
    assert "vtkMRMLScalarVolumeNode" in node_types
    selector_path = [w for w in ui_widgets["inputsCollapsibleButton"].iter("widget")]
    assert ui_widgets["inputVolumeSelector"] in selector_path  # inside the "Inputs" section
    table_in_results = list(ui_widgets["resultsCollapsibleButton"].iter("widget"))
    assert ui_widgets["findingsTableView"] in table_in_results and ui_widgets["saveReportButton"] in table_in_results
    assert ui_widgets["examSummaryLabel"] is table_in_results[1]  # the first thing in the results section
    clinical = list(ui_widgets["clinicalCollapsibleButton"].iter("widget"))
    assert {"indicationComboBox", "patientAgeSpinBox", "patientSexComboBox", "familyHistoryComboBox"} <= {
        w.get("name") for w in clinical}


def test_ui_widget_classes_are_qt_or_declared(ui_widgets):
    root = ET.parse(UI_FILE).getroot()
    declared = {c.findtext("class"): c.findtext("extends") for c in root.iter("customwidget")}
    used = {w.get("class") for w in ui_widgets.values()}
    assert used <= QT_WIDGETS | set(declared), f"undeclared widget classes: {sorted(used - QT_WIDGETS - set(declared))}"
    assert set(declared) <= used | {"qMRMLWidget"}, "declared custom widgets that are not used"
    receivers = {c.findtext("receiver") for c in root.iter("connection")}
    mrml_widgets = {n for n, w in ui_widgets.items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    assert mrml_widgets <= receivers, "every MRML widget gets the scene through a mrmlSceneChanged connection"


def test_operating_point_default_is_documented(module_ast, ui_widgets):
    """The panel's default operating point is the FP-reduction model's, in the module, the .ui and its tooltip."""
    import json

    model_default = json.loads((REPO_ROOT / "models" / "fpr" / "config.json").read_text())["operating_point"]["min_score"]
    slider = ui_widgets["minScoreSliderWidget"]
    values = {p.get("name"): p.findtext("double") for p in slider.findall("property")}
    assert float(values["value"]) == model_default
    assert float(values["minimum"]) == 0.0 and float(values["maximum"]) == 1.0
    tooltip = slider.find("property[@name='toolTip']").findtext("string")
    assert f"{model_default} (default)" in tooltip and "false positive" in tooltip
    defaults = {stmt.targets[0].id: ast.literal_eval(stmt.value) for stmt in module_ast.body
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == "DEFAULT_MIN_SCORE"}
    assert defaults == {"DEFAULT_MIN_SCORE": model_default}


def test_widget_does_no_mrml_work(module_ast):
    widget = _classes(module_ast)["LungLesionAIWidget"]
    calls = {node.func.attr for node in ast.walk(widget)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert not calls & MRML_CHANGING_CALLS, f"MRML work in the Widget: {sorted(calls & MRML_CHANGING_CALLS)}"
    methods = {n.name for n in widget.body if isinstance(n, ast.FunctionDef)}
    referenced = {node.attr for node in ast.walk(widget)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
                  and node.attr.startswith("on")}
    assert referenced <= methods, f"slots used but not defined: {sorted(referenced - methods)}"


def test_logic_process_has_the_scripting_signature(module_ast):
    logic = _classes(module_ast)["LungLesionAILogic"]
    process = next(n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "process")
    names = [a.arg for a in process.args.args]
    assert names[:4] == ["self", "inputVolumeNode", "stages", "device"]
    assert ast.get_docstring(process) and "Returns:" in ast.get_docstring(process)
    for name in ("startAnalysis", "finishAnalysis", "setReviewStatus", "updateMeasurements", "saveReport",
                 "loadResults", "applyAxisEdit", "examSummary", "dicomPatientValues"):
        assert name in {n.name for n in logic.body if isinstance(n, ast.FunctionDef)}, name


def test_every_public_function_and_class_of_the_module_has_a_docstring(module_ast):
    missing = []
    for node in ast.walk(module_ast):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
            if node.name in ("setup", "cleanup", "enter", "exit", "setUp", "runTest", "getParameterNode") or \
                    node.name.startswith("on") or node.name.startswith("test_"):
                continue  # Slicer's framework methods, Qt slots and test cases
            if not ast.get_docstring(node):
                missing.append(node.name)
    assert missing == []


def test_gui_parameters_match_the_parameter_node(module_ast, ui_widgets):
    fields = _parameter_fields(module_ast)
    bound = {}
    for widget in ui_widgets.values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    assert set(bound) <= set(fields), f"not parameter-node fields: {sorted(set(bound) - set(fields))}"
    assert set(fields) <= set(bound), f"parameters without a widget: {sorted(set(fields) - set(bound))}"
    for field, widget_class in bound.items():
        assert widget_class in WIDGET_FOR_TYPE[fields[field]], (field, fields[field], widget_class)


def test_icon_is_a_128_pixel_png():
    with Image.open(ICON_FILE) as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def _cmake_text(path: Path) -> str:
    """CMake source without comments."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())


def test_module_cmake_lists_module_files_and_resources():
    text = _cmake_text(MODULE_CMAKE)
    assert re.search(r"set\(MODULE_NAME\s+LungLesionAI\)", text)
    scripts = re.search(r"set\(MODULE_PYTHON_SCRIPTS(.*?)\)", text, re.DOTALL).group(1).split()
    assert "${MODULE_NAME}.py" in scripts
    helpers = {p.relative_to(MODULE_DIR).as_posix() for p in LIB_DIR.glob("*.py")}
    assert helpers and helpers <= {s.replace("${MODULE_NAME}", "LungLesionAI") for s in scripts}
    resources = re.search(r"set\(MODULE_PYTHON_RESOURCES(.*?)\)", text, re.DOTALL).group(1).split()
    listed = {r.replace("${MODULE_NAME}", "LungLesionAI") for r in resources}
    present = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert listed == present
    macro = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.DOTALL).group(1)
    for word in ("NAME ${MODULE_NAME}", "SCRIPTS ${MODULE_PYTHON_SCRIPTS}", "RESOURCES ${MODULE_PYTHON_RESOURCES}",
                 "WITH_GENERIC_TESTS"):
        assert word in " ".join(macro.split())
    testing = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", text, re.DOTALL).group(1)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in testing


def test_module_cmake_globs_cover_every_package_file():
    text = _cmake_text(MODULE_CMAKE)
    assert re.search(r"set\(LUNGLESIONAI_SOURCE_DIR\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/Logic/lunglesionai\)", text)
    glob_call = r"file\((GLOB|GLOB_RECURSE)\s+(\w+)\s+RELATIVE\s+\S+\s+CONFIGURE_DEPENDS(.*?)\)"
    globs = re.findall(glob_call, text, re.DOTALL)
    assert {var for _, var, _ in globs} == {
        "LUNGLESIONAI_PACKAGE_SCRIPTS", "LUNGLESIONAI_PACKAGE_SCHEMAS", "LUNGLESIONAI_MODEL_FILES"
    }
    globs = [g for g in globs if g[1] != "LUNGLESIONAI_MODEL_FILES"]
    files = [p for p in PACKAGE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    relative = {p.relative_to(PACKAGE_DIR).as_posix() for p in files}
    covered = set()
    for kind, _, patterns in globs:
        for pattern in patterns.split():
            pattern = pattern.replace("${LUNGLESIONAI_SOURCE_DIR}/", "")
            if kind == "GLOB_RECURSE":  # CMake's recursive glob matches the pattern's name part at any depth
                covered |= {r for r in relative if fnmatch.fnmatch(r.rsplit("/", 1)[-1], pattern)}
            else:
                covered |= {r for r in relative if fnmatch.fnmatch(r, pattern) and r.count("/") == pattern.count("/")}
    assert relative - covered == set(), "package files CMake would not install"
    assert {"__init__.py", "mrml/scene.py", "io/outputs.py", "core/findings.py", "core/volume.py",
            "schemas/report-1.json", "app/background.py", "mrml/review.py", "io/report_html.py"} <= covered
    assert "lunglesionai/${file}" in text  # installed under the import name


def test_module_cmake_installs_every_model_file_inside_the_package():
    text = _cmake_text(MODULE_CMAKE)
    assert re.search(r"set\(LUNGLESIONAI_MODELS_DIR\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/\.\./models\)", text)
    assert re.search(r"GLOB_RECURSE LUNGLESIONAI_MODEL_FILES .*?\$\{LUNGLESIONAI_MODELS_DIR\}/\*/\*", text, re.DOTALL)
    assert "lunglesionai/models/${file_dir}" in text
    models = REPO_ROOT / "models"
    in_subfolders = [p for p in models.rglob("*") if p.is_file() and p.parent != models]
    assert any(p.name == "grader.pt" for p in in_subfolders)
    assert all(len(p.relative_to(models).parts) == 2 for p in in_subfolders), "the glob models/*/* misses deeper files"


def test_top_level_cmake_has_extension_metadata():
    text = _cmake_text(TOP_CMAKE)
    assert re.search(r"cmake_minimum_required\(VERSION 3\.16\.3\.\.\.3\.19\.7", text)
    assert re.search(r"project\(LungLesionAI\)", text)
    values = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert values.get(f"EXTENSION_{key}"), key
    assert "PyTorch" in values["EXTENSION_DEPENDS"].split()
    assert values["EXTENSION_ICONURL"].endswith("LungLesionAI/Resources/Icons/LungLesionAI.png")
    order = ["find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(LungLesionAI)",
             "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.find(statement) for statement in order]
    assert -1 not in positions and positions == sorted(positions)


def test_slicer_requirements_cover_the_package_dependencies():
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()
    listed = {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower() for line in lines if line and line[0] != "#"}
    needed = {re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].lower() for dep in declared}
    needed.discard("torch")  # inside Slicer torch comes from the PyTorch extension (EXTENSION_DEPENDS), not pip
    assert "torch" not in listed
    assert needed <= listed, f"missing in Resources/requirements.txt: {sorted(needed - listed)}"


def test_package_never_imports_qt_and_only_the_mrml_adapters_import_slicer_lazily():
    for path in PACKAGE_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]} if node.level == 0 else set()
            else:
                continue
            assert not roots & {"qt", "ctk", "PythonQt"}, f"{path.name} imports Qt"
            if "slicer" in roots:
                assert path.parent.name == "mrml", f"{path} imports slicer outside lunglesionai.mrml"
                assert node not in tree.body, f"{path.name} must import slicer inside functions"


def test_pyproject_ships_the_schemas_used_by_cmake():
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "schemas/*.json" in data["tool"]["setuptools"]["package-data"]["lunglesionai"]


def test_install_helpers_live_in_the_module_lib(module_ast):
    helpers = {"ensurePythonRequirements", "missingPythonRequirements", "manualInstallMessage"}
    top_functions = {n.name for n in module_ast.body if isinstance(n, ast.FunctionDef)}
    assert not top_functions & helpers, "LungLesionAI.py holds Widget, Logic and Test; helpers go to LungLesionAILib/"
    source = (LIB_DIR / "install.py").read_text(encoding="utf-8")
    lib = ast.parse(compile(source, "install.py", "exec", flags=ast.PyCF_ONLY_AST))
    assert helpers <= {n.name for n in lib.body if isinstance(n, ast.FunctionDef)}
    imported = {(n.module, a.name) for n in module_ast.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("LungLesionAILib.install", "ensurePythonRequirements") in imported
    assert "spec_from_file_location" not in MODULE_FILE.read_text(encoding="utf-8")  # a plain import of the package


def test_panel_sends_no_operating_point_unless_the_user_moved_the_slider(module_ast):
    """At the default the CLI's model default applies (FP reduction on or off); a moved slider is sent as is."""
    functions = {n.name: n for n in module_ast.body if isinstance(n, ast.FunctionDef)}
    namespace = {"DEFAULT_MIN_SCORE": 0.7}
    exec(compile(ast.Module([functions["chosenOperatingPoint"]], []), "LungLesionAI.py", "exec"), namespace)
    chosen = namespace["chosenOperatingPoint"]
    assert chosen(0.7) is None and chosen(0.0) == 0.0 and chosen(0.55) == 0.55
    widget = _classes(module_ast)["LungLesionAIWidget"]
    calls = [ast.unparse(k.value) for n in ast.walk(widget) if isinstance(n, ast.Call)
             for k in n.keywords if k.arg == "minScore"]
    assert calls == ["chosenOperatingPoint(params.minScore)"]
    logic = _classes(module_ast)["LungLesionAILogic"]
    defaults = {f.name: ast.unparse(f.args.defaults[f.args.args.index(a) - len(f.args.args) + len(f.args.defaults)])
                for f in logic.body if isinstance(f, ast.FunctionDef) for a in f.args.args if a.arg == "minScore"}
    assert defaults == {"startAnalysis": "None", "process": "None"}


def test_panel_sends_the_indication_and_patient_values(module_ast):
    """Apply passes the Indication combo and the patient fields; the Logic forwards them to the CLI's options."""
    widget = _classes(module_ast)["LungLesionAIWidget"]
    keywords = {k.arg: ast.unparse(k.value) for n in ast.walk(widget) if isinstance(n, ast.Call)
                and ast.unparse(n.func) == "self.logic.startAnalysis" for k in n.keywords}
    assert keywords["indication"] == "params.indication" and keywords["patient"] == "self._patientValues()"
    values = next(f for f in widget.body if isinstance(f, ast.FunctionDef) and f.name == "_patientValues")
    assert {ast.literal_eval(k) for n in ast.walk(values) if isinstance(n, ast.Dict) for k in n.keys} == {
        "age_years", "sex", "family_history"}  # keywords of lunglesionai.app.background.analyze_arguments
    logic = _classes(module_ast)["LungLesionAILogic"]
    start = next(f for f in logic.body if isinstance(f, ast.FunctionDef) and f.name == "startAnalysis")
    assert {"indication", "patient", "priorVolumeNode", "intervalDays"} <= {a.arg for a in start.args.args}
    forwarded = {k.arg for n in ast.walk(start) if isinstance(n, ast.Call)
                 and ast.unparse(n.func) == "BackgroundAnalysis.start" for k in n.keywords}
    assert {"indication", "prior", "interval_days", None} <= forwarded  # indication=…, the prior, **given
    assert keywords["priorVolumeNode"] == "params.priorVolume"  # the "Prior scan" selector (issue 16)
    assert keywords["intervalDays"] == "params.intervalDays or None"  # 0 = from the study dates
    choices = {stmt.targets[0].id: ast.literal_eval(stmt.value) for stmt in module_ast.body
               if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
               and stmt.targets[0].id in ("INDICATIONS", "SEX_CHOICES")}
    from lunglesionai.app.background import CLINICAL_INDICATIONS, PATIENT_SEXES

    assert choices == {"INDICATIONS": CLINICAL_INDICATIONS, "SEX_CHOICES": ("", *PATIENT_SEXES)}

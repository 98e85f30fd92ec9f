"""Installing the Python packages the ``lunglesionai`` engine needs inside 3D Slicer (Qt/Slicer side).

torch comes from the PyTorch extension's ``PyTorchUtils`` (so that pip does not fetch a CPU-only torch for monai);
the rest from ``Resources/requirements.txt`` through ``slicer.packaging.pip_ensure`` (Slicer 5.12+) or
``slicer.util.pip_install``. Called from the module's Widget before the first analysis.
"""

import importlib
import os
import re

from slicer.i18n import tr as _

import slicer

#: The module's folder (this file lives in ``LungLesionAILib/`` beside ``LungLesionAI.py``).
MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS_PATH = os.path.join(MODULE_DIR, "Resources", "requirements.txt")
#: Minimum torch version (installed through the PyTorch extension, not pip).
TORCH_REQUIREMENT = ">=2.2"


def _readRequirementLines(path: str) -> list:
    with open(path, encoding="utf-8") as file:
        lines = (line.split("#", 1)[0].strip() for line in file)
        return [line for line in lines if line and not line.startswith("-")]


def missingPythonRequirements() -> list:
    """Requirement lines of ``Resources/requirements.txt`` whose distribution is not installed (versions not checked;
    ``pip_ensure`` checks them). "torch" is reported too when it is missing."""
    from importlib import metadata

    missing = []
    for requirement in _readRequirementLines(REQUIREMENTS_PATH) + [f"torch{TORCH_REQUIREMENT}"]:
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def manualInstallMessage(requirements: list) -> str:
    """What to run by hand when the automatic installation fails (offline, proxy)."""
    quoted = " ".join(f'"{r}"' for r in requirements if not r.startswith("torch"))
    lines = [_("LungLesionAI could not install the Python packages it needs (offline, or a proxy blocks pip?).")]
    if any(r.startswith("torch") for r in requirements):
        lines.append(_("PyTorch: install the 'PyTorch' extension from the Extension Manager, restart Slicer, open the "
                       "'PyTorch Utils' module and click 'Install PyTorch' (torch {req}).").format(req=TORCH_REQUIREMENT))
    if quoted:
        lines.append(_("Other packages: in Slicer's Python console run") + f"\n    slicer.util.pip_install('{quoted}')\n"
                     + _("or in a terminal") + f"\n    PythonSlicer -m pip install {quoted}\n"
                     + _("(behind a proxy add --proxy http://HOST:PORT; offline, download the wheels elsewhere and "
                         "install them with --no-index --find-links FOLDER)."))
    lines.append(_("Then restart Slicer."))
    return "\n".join(lines)


def ensurePythonRequirements() -> None:
    """Install what the package needs when missing (may ask the user; call from the GUI).

    torch comes from the PyTorch extension's ``PyTorchUtils`` (first, so that pip does not fetch a CPU-only torch
    for monai); the rest from ``Resources/requirements.txt`` through ``slicer.packaging.pip_ensure`` (Slicer 5.12+;
    ``slicer.pydeps.pip_ensure`` on builds that name it so), else ``slicer.util.pip_install``.

    Raises:
        RuntimeError: installation declined or failed; the message says exactly what to install by hand.
    """
    missing = missingPythonRequirements()
    if not missing:
        return
    try:
        if any(r.startswith("torch") for r in missing):
            _installTorch()
        requirements = [r for r in missing if not r.startswith("torch")]
        if requirements:
            pipEnsure = _pipEnsure()
            if pipEnsure is not None:
                pipEnsure(_readRequirementLines(REQUIREMENTS_PATH), requester="LungLesionAI")
            else:
                slicer.util.pip_install(requirements)
    except Exception as error:
        raise RuntimeError(manualInstallMessage(missing) + f"\n\n({type(error).__name__}: {error})") from error
    stillMissing = missingPythonRequirements()
    if stillMissing:
        raise RuntimeError(manualInstallMessage(stillMissing))


def _pipEnsure():
    for moduleName in ("slicer.packaging", "slicer.pydeps"):
        try:
            module = importlib.import_module(moduleName)
        except ImportError:
            continue
        if hasattr(module, "pip_ensure"):
            return module.pip_ensure
    return None


def _installTorch() -> None:
    try:
        import PyTorchUtils
    except ImportError as error:
        raise RuntimeError(_("The PyTorch extension is not installed")) from error
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        torch = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise RuntimeError(_("PyTorch installation was declined"))

"""libvirt helpers shared by cloudctl's Ansible modules.

The ``libvirt`` import is guarded: modules check ``HAS_LIBVIRT`` and fail with
``missing_required_lib`` if the binding is absent on the host.
"""

from __future__ import annotations

import hashlib
import traceback
import xml.etree.ElementTree as ET
from typing import Any

try:
    import libvirt
except ImportError:
    libvirt = None
    HAS_LIBVIRT = False
    LIBVIRT_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_LIBVIRT = True
    LIBVIRT_IMPORT_ERROR = None

# Namespace of the <metadata> element in which cloudctl_domain records the hash of the
# XML it was asked to define.
METADATA_NS = "https://cloudctl.dev/xmlns/module/1"
METADATA_PREFIX = "cloudctl"
METADATA_ELEMENT = "module"
HASH_ELEMENT = "xml-sha256"

# Index = virDomainState value.
DOMAIN_STATES = (
    "nostate",
    "running",
    "blocked",
    "paused",
    "shutdown",
    "shutoff",
    "crashed",
    "pmsuspended",
)


def state_name(code: int) -> str:
    """Map a ``virDomainState`` integer to its lower-case name (``nostate`` if unknown)."""
    if 0 <= code < len(DOMAIN_STATES):
        return DOMAIN_STATES[code]
    return "nostate"


def require_libvirt(module: Any) -> None:
    """Fail the module call if libvirt-python is not importable on this host."""
    if not HAS_LIBVIRT:
        from ansible.module_utils.basic import missing_required_lib

        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=LIBVIRT_IMPORT_ERROR)


def _silence(_ctx: object, _err: object) -> None:
    """libvirt error handler that keeps the C library from printing to stderr."""


def connect(module: Any, uri: str, readonly: bool = False) -> Any:
    """Open ``uri`` or fail the module call with libvirt's reason."""
    require_libvirt(module)
    libvirt.registerErrorHandler(_silence, None)
    try:
        return libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        module.fail_json(msg=f"cannot connect to libvirt at {uri}: {exc}")
        raise  # unreachable


def is_no_domain(exc: Exception) -> bool:
    """True if ``exc`` is libvirt's "domain not found" error."""
    return (
        HAS_LIBVIRT
        and isinstance(exc, libvirt.libvirtError)
        and exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    )


def lookup_domain(conn: Any, name: str) -> Any | None:
    """The domain called ``name`` or None if there is none."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            return None
        raise


# --- desired-XML hashing --------------------------------------------------------------


def _ns(tag: str) -> str:
    return f"{{{METADATA_NS}}}{tag}"


def _strip_own_metadata(root: ET.Element) -> None:
    for metadata in root.findall("metadata"):
        for child in list(metadata):
            if child.tag == _ns(METADATA_ELEMENT):
                metadata.remove(child)
        if len(metadata) == 0:
            root.remove(metadata)


def parse_domain_xml(xml: str) -> ET.Element:
    """Parse domain XML, raising ValueError with a readable reason."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"invalid domain XML: {exc}") from exc
    if root.tag != "domain":
        raise ValueError(f"invalid domain XML: root element is <{root.tag}>, expected <domain>")
    return root


def normalise_domain_xml(xml: str) -> str:
    """Canonical form of a desired domain XML, the input of ``desired_xml_hash``.

    C14N 2.0 with whitespace-only text stripped and comments dropped, and without any
    cloudctl metadata element, so formatting, attribute order, quoting and a previously
    injected hash do not change the result.
    """
    root = parse_domain_xml(xml)
    _strip_own_metadata(root)
    return ET.canonicalize(ET.tostring(root, encoding="unicode"), strip_text=True)


def desired_xml_hash(xml: str) -> str:
    """sha256 (hex) of the normalised desired domain XML."""
    return hashlib.sha256(normalise_domain_xml(xml).encode("utf-8")).hexdigest()


def recorded_xml_hash(xml: str) -> str | None:
    """The hash cloudctl recorded in a domain's XML metadata, or None."""
    root = parse_domain_xml(xml)
    for metadata in root.findall("metadata"):
        element = metadata.find(f"{_ns(METADATA_ELEMENT)}/{_ns(HASH_ELEMENT)}")
        if element is not None and element.text:
            return element.text.strip()
    return None


def xml_with_hash(xml: str, digest: str, uuid: str | None = None) -> str:
    """Desired XML with cloudctl's hash metadata (and ``uuid`` if it has none) injected."""
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    root = parse_domain_xml(xml)
    _strip_own_metadata(root)
    if uuid and root.find("uuid") is None:
        uuid_element = ET.Element("uuid")
        uuid_element.text = uuid
        name = root.find("name")
        position = list(root).index(name) + 1 if name is not None else 0
        root.insert(position, uuid_element)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    module = ET.SubElement(metadata, _ns(METADATA_ELEMENT))
    ET.SubElement(module, _ns(HASH_ELEMENT)).text = digest
    return ET.tostring(root, encoding="unicode")


def domain_xml_name(xml: str) -> str | None:
    """The <name> of a domain XML, or None."""
    element = parse_domain_xml(xml).find("name")
    return element.text.strip() if element is not None and element.text else None


def domain_xml_uuid(xml: str) -> str | None:
    """The <uuid> of a domain XML, or None."""
    element = parse_domain_xml(xml).find("uuid")
    return element.text.strip() if element is not None and element.text else None

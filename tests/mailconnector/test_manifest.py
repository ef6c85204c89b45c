"""The add-in's XML manifest: valid against Microsoft's schemas, and saying what Outlook needs.

The schemas are read in place from ../shared/office-schemas (or CRM_OFFICE_SCHEMAS), never
copied into the project: see SOURCE.md there for where they come from, and for the one
regular expression libxml2 cannot compile (fixed in memory here, as SOURCE.md explains).
"""

from __future__ import annotations

import os
import re
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from lxml import etree
from PIL import Image

from mailconnector import manifest

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(os.environ.get("CRM_OFFICE_SCHEMAS", ROOT.parent / "shared" / "office-schemas"))
ADDIN = ROOT / "mailconnector" / "addin"
URL = "https://crm.example.com"
NS = {
    "o": "http://schemas.microsoft.com/office/appforoffice/1.1",
    "bt": "http://schemas.microsoft.com/office/officeappbasictypes/1.0",
    "v10": "http://schemas.microsoft.com/office/mailappversionoverrides",
    "v11": "http://schemas.microsoft.com/office/mailappversionoverrides/1.1",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
# SOURCE.md, "Known defect": a .NET lazy quantifier that XSD regexes do not have.
BAD_PATTERN = b'<xs:pattern value="([0-9]{1,5})(\\.[0-9]{1,5}){0,3}?"/>'
GOOD_PATTERN = b'<xs:pattern value="([0-9]{1,5})(\\.[0-9]{1,5}){0,3}"/>'


class _LocalSchemas(etree.Resolver):
    """Imports resolve to the vendored folder only; nothing is fetched from the network."""

    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
        name = os.path.basename(system_url)
        path = SCHEMAS / name
        if not path.is_file():
            raise OSError(f"schema not vendored locally: {system_url}")
        data = path.read_bytes()
        if name == "OfficeAppBasicTypesV1_0.xsd":
            assert data.count(BAD_PATTERN) == 1, "the schema changed; re-read SOURCE.md"
            data = data.replace(BAD_PATTERN, GOOD_PATTERN)
        return self.resolve_string(data, context, base_url=str(path))


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    root = SCHEMAS / "OfficeAppManifestV1_1.xsd"
    if not root.is_file():
        pytest.skip(
            f"Microsoft's manifest schemas are not at {SCHEMAS} (set CRM_OFFICE_SCHEMAS to the "
            "folder described by office-schemas/SOURCE.md)"
        )
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_LocalSchemas())
    return etree.XMLSchema(etree.parse(str(root), parser))


def _parse(xml: bytes) -> etree._ElementTree:
    return etree.parse(BytesIO(xml), etree.XMLParser(no_network=True))


def _valid(schema: etree.XMLSchema, xml: bytes) -> etree._ElementTree:
    doc = _parse(xml)
    assert schema.validate(doc), "\n".join(f"{e.line}: {e.message}" for e in schema.error_log)
    return doc


@pytest.fixture
def doc(schema: etree.XMLSchema) -> etree._ElementTree:
    return _valid(schema, manifest.build(manifest.Installation(url=URL)))


def _one(doc: etree._ElementTree, path: str) -> Any:
    (found,) = doc.xpath(path, namespaces=NS)
    return found


def test_the_manifest_validates_against_microsofts_schemas(doc: etree._ElementTree) -> None:
    assert doc.getroot().get(XSI_TYPE) == "MailApp"


def test_it_reads_messages_only_with_mailbox_1_5(doc: etree._ElementTree) -> None:
    assert _one(doc, "/o:OfficeApp/o:Permissions").text == "ReadItem"
    assert _one(doc, "/o:OfficeApp/o:Requirements/o:Sets/o:Set[@Name='Mailbox']/@MinVersion") == (
        "1.5"
    )
    rule = _one(doc, "/o:OfficeApp/o:Rule/o:Rule")
    assert (rule.get(XSI_TYPE), rule.get("ItemType"), rule.get("FormType")) == (
        "ItemIs",
        "Message",
        "Read",
    )
    inner = "//v11:VersionOverrides/v11:Requirements/bt:Sets"
    assert _one(doc, f"{inner}/@DefaultMinVersion") == "1.5"


def test_a_pinnable_button_on_the_read_surface_of_desktop_web_and_mobile(
    doc: etree._ElementTree,
) -> None:
    host = "//v11:VersionOverrides/v11:Hosts/v11:Host"
    desktop = _one(doc, f"{host}/v11:DesktopFormFactor/v11:ExtensionPoint")
    mobile = _one(doc, f"{host}/v11:MobileFormFactor/v11:ExtensionPoint")
    assert desktop.get(XSI_TYPE) == "MessageReadCommandSurface"
    assert mobile.get(XSI_TYPE) == "MobileMessageReadCommandSurface"
    action = _one(doc, f"{host}/v11:DesktopFormFactor//v11:Control/v11:Action")
    assert action.get(XSI_TYPE) == "ShowTaskpane"
    assert _one(doc, f"{host}/v11:DesktopFormFactor//v11:SupportsPinning").text == "true"
    assert _one(doc, f"{host}/v11:MobileFormFactor//v11:Control").get(XSI_TYPE) == "MobileButton"
    urls = {u.get("id"): u.get("DefaultValue") for u in doc.xpath("//bt:Url", namespaces=NS)}
    assert urls["paneUrl"] == f"{URL}/addin/"
    assert _one(doc, "//o:FormSettings//o:SourceLocation/@DefaultValue") == f"{URL}/addin/"


def test_app_domains_name_the_crm(doc: etree._ElementTree) -> None:
    assert [d.text for d in doc.xpath("//o:AppDomains/o:AppDomain", namespaces=NS)] == [URL]


def test_every_icon_size_the_schema_asks_exists_as_a_png_of_that_size(
    doc: etree._ElementTree,
) -> None:
    images = {
        i.get("id"): i.get("DefaultValue") for i in doc.xpath("//bt:Image[@id]", namespaces=NS)
    }
    desktop = doc.xpath("//v11:DesktopFormFactor//v11:Icon/bt:Image", namespaces=NS)
    assert sorted(int(i.get("size")) for i in desktop) == [16, 32, 80]
    mobile = doc.xpath("//v11:MobileFormFactor//v11:Icon/bt:Image", namespaces=NS)
    assert sorted((int(i.get("size")), int(i.get("scale"))) for i in mobile) == [
        (size, scale) for size in (25, 32, 48) for scale in (1, 2, 3)
    ]
    wanted: dict[str, int] = {}
    for image in desktop:
        wanted[image.get("resid")] = int(image.get("size"))
    for image in mobile:
        wanted[image.get("resid")] = int(image.get("size")) * int(image.get("scale"))
    wanted[_resid(images, _one(doc, "/o:OfficeApp/o:IconUrl/@DefaultValue"))] = 64
    wanted[_resid(images, _one(doc, "/o:OfficeApp/o:HighResolutionIconUrl/@DefaultValue"))] = 128
    for resid, pixels in wanted.items():
        url = images[resid]
        assert url.startswith(f"{URL}/addin/icons/")
        png = ADDIN / url.removeprefix(f"{URL}/addin/")
        with Image.open(png) as icon:
            assert icon.format == "PNG"
            assert icon.size == (pixels, pixels), png.name


def _resid(images: dict[str, str], url: str) -> str:
    return next(resid for resid, value in images.items() if value == url)


def test_the_schema_is_strict_enough_to_catch_a_broken_manifest(
    schema: etree.XMLSchema,
) -> None:
    xml = manifest.build(manifest.Installation(url=URL))
    eight_mobile_icons = re.sub(rb'\s*<bt:Image size="48" scale="3"[^>]*/>', b"", xml, count=1)
    assert not schema.validate(_parse(eight_mobile_icons))
    assert not schema.validate(_parse(xml.replace(b"ReadItem", b"ReadAll")))


def test_the_id_is_stable_per_address_and_can_be_given(schema: etree.XMLSchema) -> None:
    one = manifest.build(manifest.Installation(url="https://CRM.example.com/"))
    two = manifest.build(manifest.Installation(url=URL))
    assert one == two
    given = "0b5a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
    doc = _valid(schema, manifest.build(manifest.Installation(url=URL, id=given)))
    assert _one(doc, "/o:OfficeApp/o:Id").text == given
    other = _parse(manifest.build(manifest.Installation(url="https://other.example.com")))
    assert _one(other, "/o:OfficeApp/o:Id").text != _one(_parse(two), "/o:OfficeApp/o:Id").text


def test_a_name_with_markup_is_escaped_and_a_crm_under_a_path_works(
    schema: etree.XMLSchema,
) -> None:
    xml = manifest.build(
        manifest.Installation(url="https://example.com/crm/", name='Acme "CRM" <Mail> & Co')
    )
    doc = _valid(schema, xml)
    assert _one(doc, "/o:OfficeApp/o:DisplayName/@DefaultValue") == 'Acme "CRM" <Mail> & Co'
    assert _one(doc, "//bt:Url[@id='paneUrl']/@DefaultValue") == "https://example.com/crm/addin/"
    assert [d.text for d in doc.xpath("//o:AppDomain", namespaces=NS)] == ["https://example.com"]


def test_a_pane_hosted_elsewhere_is_loaded_from_there_and_both_domains_are_allowed(
    schema: etree.XMLSchema,
) -> None:
    xml = manifest.build(manifest.Installation(url=URL, pane_url="https://addin.example.net/crm"))
    doc = _valid(schema, xml)
    assert _one(doc, "//bt:Url[@id='paneUrl']/@DefaultValue") == "https://addin.example.net/crm/"
    assert _one(doc, "/o:OfficeApp/o:IconUrl/@DefaultValue").startswith(
        "https://addin.example.net/crm/icons/"
    )
    assert [d.text for d in doc.xpath("//o:AppDomain", namespaces=NS)] == [
        "https://addin.example.net",
        URL,
    ]


def test_the_manifest_and_the_pane_have_the_same_version(doc: etree._ElementTree) -> None:
    config = (ADDIN / "js" / "config.js").read_text(encoding="utf-8")
    (pane,) = re.findall(r'export const ADDIN_VERSION = "([^"]+)";', config)
    assert pane == manifest.ADDIN_VERSION
    assert _one(doc, "/o:OfficeApp/o:Version").text == f"{pane}.0"


def test_the_command_writes_the_manifest(tmp_path: Path, schema: etree.XMLSchema) -> None:
    out = tmp_path / "manifest.xml"
    said = StringIO()
    call_command(
        "addin_manifest", "--url", URL, "--name", "Acme CRM", "--output", str(out), stdout=said
    )
    doc = _valid(schema, out.read_bytes())
    assert _one(doc, "/o:OfficeApp/o:DisplayName/@DefaultValue") == "Acme CRM"
    assert str(out) in said.getvalue()
    printed = StringIO()
    call_command("addin_manifest", "--url", URL, stdout=printed)
    assert printed.getvalue().encode() == manifest.build(manifest.Installation(url=URL))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://crm.example.com"], "not an https:// address"),
        (["--url", URL, "--id", "not-a-guid"], "is not a GUID"),
        (["--url", URL, "--name", " "], "name must be 1 to 125 characters"),
    ],
)
def test_the_command_refuses_bad_values_in_words(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("addin_manifest", *args, stdout=StringIO())

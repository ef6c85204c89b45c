"""The Outlook add-in's XML manifest ("add-in only" manifest) for one CRM installation.

Pure: values in, bytes out; no settings, no models. `manage.py addin_manifest` calls `build`.

The shape follows Microsoft's published schemas (OfficeAppManifestV1_1 with VersionOverrides
1.0 wrapping 1.1; tests validate against them): a mail add-in that activates on read messages
(ReadItem), needs Mailbox 1.5, puts one button on the message-read surface of Outlook on the
desktop and the web and one on the mobile message-read surface, and opens a pinnable task pane
served by the CRM at <url>/addin/.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

# The add-in's own version: the manifest's <Version> (four parts) and, in the pane,
# mailconnector/addin/js/config.js ADDIN_VERSION (three parts). A test keeps them in step.
ADDIN_VERSION = "1.0.0"
DEFAULT_NAME = "CRM Mail Connector"
PROVIDER = "CRM Mail Connector"
DESCRIPTION = "Link the email you are reading to the right records in your CRM."
MIN_MAILBOX = "1.5"
# Pixel sizes of the PNGs under mailconnector/addin/icons/ (icon-<px>.png).
DESKTOP_ICON_SIZES = (16, 32, 80)  # the ribbon button's bt:IconList
MOBILE_ICON_SIZES = (25, 32, 48)  # bt:MobileIconList, each at scale 1, 2 and 3
MOBILE_SCALES = (1, 2, 3)
APP_ICON = 64  # IconUrl (Outlook shows it 64 x 64)
HIGH_RES_ICON = 128  # HighResolutionIconUrl
# A fixed namespace so that one CRM address always gives the same add-in id: Outlook treats a
# manifest with another id as another add-in, so regenerating must not change it.
ID_NAMESPACE = uuid.UUID("5b2f7f3e-4a53-4bb0-9a53-6d1f0c4e7a10")


def icon_sizes() -> list[int]:
    """Every PNG size the manifest refers to."""
    mobile = {size * scale for size in MOBILE_ICON_SIZES for scale in MOBILE_SCALES}
    return sorted({*DESKTOP_ICON_SIZES, *mobile, APP_ICON, HIGH_RES_ICON})


def default_id(url: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, normalise_url(url)))


def normalise_url(url: str) -> str:
    """The CRM's base URL, https, without query or trailing slash; ValueError in words."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(
            f"{url!r} is not an https:// address; Outlook loads add-ins only over HTTPS."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r}: give the CRM's address only, without query or credentials.")
    host = parts.hostname.lower()
    netloc = f"{host}:{parts.port}" if parts.port and parts.port != 443 else host
    return f"https://{netloc}{parts.path.rstrip('/')}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class Installation:
    """One CRM; `pane_url` only when the pane's files are hosted elsewhere than <url>/addin/."""

    url: str
    name: str = DEFAULT_NAME
    id: str = ""
    version: str = ADDIN_VERSION
    pane_url: str = ""

    @property
    def base(self) -> str:
        return normalise_url(self.url)

    @property
    def pane(self) -> str:
        return normalise_url(self.pane_url) + "/" if self.pane_url else f"{self.base}/addin/"

    @property
    def app_domains(self) -> list[str]:
        # The CRM's origin is needed even with the pane elsewhere: the sign-in dialog opens there.
        return list(dict.fromkeys([_origin(self.pane), _origin(self.base)]))

    @property
    def addin_id(self) -> str:
        return str(uuid.UUID(self.id)) if self.id else default_id(self.url)

    def asset(self, path: str) -> str:
        return f"{self.pane}{path}"


def build(installation: Installation) -> bytes:
    """The manifest as UTF-8 XML; ValueError (in words) for a bad URL, id or name."""
    inst = installation
    normalise_url(inst.url)  # ValueError, in words, for an address Outlook cannot load
    if inst.pane_url:
        normalise_url(inst.pane_url)
    if not inst.name.strip() or len(inst.name) > 125:
        raise ValueError("The add-in's name must be 1 to 125 characters.")
    try:
        addin_id = inst.addin_id
    except ValueError:
        raise ValueError(f"{inst.id!r} is not a GUID.") from None
    name = quoteattr(inst.name.strip())
    version = ".".join((inst.version.split(".") + ["0"] * 4)[:4])
    a = {k: quoteattr(v) for k, v in _urls(inst).items()}
    desktop_icons = "\n".join(
        f'                  <bt:Image size="{s}" resid="icon{s}"/>' for s in DESKTOP_ICON_SIZES
    )
    mobile_icons = "\n".join(
        f'                    <bt:Image size="{s}" scale="{k}" resid="icon{s * k}"/>'
        for s in MOBILE_ICON_SIZES
        for k in MOBILE_SCALES
    )
    domains = "\n".join(f"    <AppDomain>{escape(d)}</AppDomain>" for d in inst.app_domains)
    images = "\n".join(
        f'          <bt:Image id="icon{s}" DefaultValue={a[f"icon{s}"]}/>' for s in icon_sizes()
    )
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<OfficeApp xmlns="http://schemas.microsoft.com/office/appforoffice/1.1"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xmlns:bt="http://schemas.microsoft.com/office/officeappbasictypes/1.0"
  xmlns:mailappor="http://schemas.microsoft.com/office/mailappversionoverrides/1.0"
  xsi:type="MailApp">
  <Id>{addin_id}</Id>
  <Version>{version}</Version>
  <ProviderName>{escape(PROVIDER)}</ProviderName>
  <DefaultLocale>en-US</DefaultLocale>
  <DisplayName DefaultValue={name}/>
  <Description DefaultValue={quoteattr(DESCRIPTION)}/>
  <IconUrl DefaultValue={a["icon"]}/>
  <HighResolutionIconUrl DefaultValue={a["icon_hi"]}/>
  <SupportUrl DefaultValue={a["support"]}/>
  <AppDomains>
{domains}
  </AppDomains>
  <Hosts>
    <Host Name="Mailbox"/>
  </Hosts>
  <Requirements>
    <Sets>
      <Set Name="Mailbox" MinVersion="{MIN_MAILBOX}"/>
    </Sets>
  </Requirements>
  <FormSettings>
    <Form xsi:type="ItemRead">
      <DesktopSettings>
        <SourceLocation DefaultValue={a["pane"]}/>
        <RequestedHeight>450</RequestedHeight>
      </DesktopSettings>
    </Form>
  </FormSettings>
  <Permissions>ReadItem</Permissions>
  <Rule xsi:type="RuleCollection" Mode="Or">
    <Rule xsi:type="ItemIs" ItemType="Message" FormType="Read"/>
  </Rule>
  <DisableEntityHighlighting>true</DisableEntityHighlighting>
  <VersionOverrides xmlns="http://schemas.microsoft.com/office/mailappversionoverrides"
    xsi:type="VersionOverridesV1_0">
    <VersionOverrides xmlns="http://schemas.microsoft.com/office/mailappversionoverrides/1.1"
      xsi:type="VersionOverridesV1_1">
      <Requirements>
        <bt:Sets DefaultMinVersion="{MIN_MAILBOX}">
          <bt:Set Name="Mailbox"/>
        </bt:Sets>
      </Requirements>
      <Hosts>
        <Host xsi:type="MailHost">
          <DesktopFormFactor>
            <FunctionFile resid="commandsUrl"/>
            <ExtensionPoint xsi:type="MessageReadCommandSurface">
              <OfficeTab id="TabDefault">
                <Group id="crmGroup">
                  <Label resid="groupLabel"/>
                  <Control xsi:type="Button" id="crmOpenPane">
                    <Label resid="buttonLabel"/>
                    <Supertip>
                      <Title resid="buttonLabel"/>
                      <Description resid="buttonTip"/>
                    </Supertip>
                    <Icon>
{desktop_icons}
                    </Icon>
                    <Action xsi:type="ShowTaskpane">
                      <SourceLocation resid="paneUrl"/>
                      <SupportsPinning>true</SupportsPinning>
                    </Action>
                  </Control>
                </Group>
              </OfficeTab>
            </ExtensionPoint>
          </DesktopFormFactor>
          <MobileFormFactor>
            <FunctionFile resid="commandsUrl"/>
            <ExtensionPoint xsi:type="MobileMessageReadCommandSurface">
              <Group id="crmMobileGroup">
                <Label resid="groupLabel"/>
                <Control xsi:type="MobileButton" id="crmMobileOpenPane">
                  <Label resid="buttonLabel"/>
                  <Icon xsi:type="bt:MobileIconList">
{mobile_icons}
                  </Icon>
                  <Action xsi:type="ShowTaskpane">
                    <SourceLocation resid="paneUrl"/>
                  </Action>
                </Control>
              </Group>
            </ExtensionPoint>
          </MobileFormFactor>
        </Host>
      </Hosts>
      <Resources>
        <bt:Images>
{images}
        </bt:Images>
        <bt:Urls>
          <bt:Url id="paneUrl" DefaultValue={a["pane"]}/>
          <bt:Url id="commandsUrl" DefaultValue={a["commands"]}/>
        </bt:Urls>
        <bt:ShortStrings>
          <bt:String id="groupLabel" DefaultValue={name}/>
          <bt:String id="buttonLabel" DefaultValue="Link to CRM"/>
        </bt:ShortStrings>
        <bt:LongStrings>
          <bt:String id="buttonTip" DefaultValue={quoteattr(DESCRIPTION)}/>
        </bt:LongStrings>
      </Resources>
    </VersionOverrides>
  </VersionOverrides>
</OfficeApp>
"""
    return text.encode("utf-8")


def _urls(inst: Installation) -> dict[str, str]:
    return {
        "pane": inst.asset(""),
        "commands": inst.asset("commands.html"),
        "icon": inst.asset(f"icons/icon-{APP_ICON}.png"),
        "icon_hi": inst.asset(f"icons/icon-{HIGH_RES_ICON}.png"),
        "support": f"{inst.base}/",
        **{f"icon{s}": inst.asset(f"icons/icon-{s}.png") for s in icon_sizes()},
    }

"""Render a :class:`DomainSpec` into libvirt domain XML through ``templates/domain.xml.j2``."""

from __future__ import annotations

from jinja2 import Environment

from cloudctl.render.environment import get_environment
from cloudctl.render.spec import METADATA_NAMESPACE, METADATA_PREFIX, DomainSpec

#: The template rendered by :func:`render_domain_xml`, relative to ``templates/``.
DOMAIN_TEMPLATE = "domain.xml.j2"


def render_domain_xml(spec: DomainSpec, *, env: Environment | None = None) -> str:
    """The libvirt domain XML for ``spec``; deterministic (metadata keys sorted)."""
    template = (env or get_environment()).get_template(DOMAIN_TEMPLATE)
    return template.render(
        d=spec,
        metadata=sorted(spec.metadata.items()),
        namespace=METADATA_NAMESPACE,
        prefix=METADATA_PREFIX,
    )

# An xio node in a container: `docker build -t xio .`, then
#   docker run -p 7700:7700 -v xio-state:/var/lib/xio xio --peers ws://other:7700
# The node's identity (its key) lives in the volume, so a new container keeps its node id.
# Discovery (mDNS) is off: multicast rarely crosses container networks; give --peers.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY xio ./xio
# xio/node/ui/client.js and client.d.ts link to them: the package installed holds their content
COPY clients/js/xio.js clients/js/xio.d.ts ./clients/js/
RUN python -m venv /opt/xio/venv \
    && /opt/xio/venv/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim-bookworm
COPY --from=build /opt/xio/venv /opt/xio/venv
# A fixed uid, not root: the volume's files belong to it on every host.
RUN useradd --system --uid 7700 --home-dir /var/lib/xio --shell /usr/sbin/nologin xio \
    && install -d -o xio -g xio -m 0700 /var/lib/xio \
    && install -d -m 0755 /etc/xio
ENV PATH=/opt/xio/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 7700:7700
VOLUME ["/var/lib/xio"]
EXPOSE 7700
# The slim image has no curl: Python asks the liveness page (public, answers on loopback).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:7700/_xio/health/live', timeout=2).status != 200)"]
# SIGTERM drains (apps withdrawn, requests in flight finished): give it drain_timeout and more.
STOPSIGNAL SIGTERM
ENTRYPOINT ["xio-node", "--state-dir", "/var/lib/xio", "--no-mdns"]
CMD []

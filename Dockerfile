# The image is the release binary alone: `make release` builds it for each
# target (no compiler runs under emulation), and this file only copies the
# one for the platform being built into an empty image. `make image` builds
# linux/amd64 and linux/arm64 with podman (or docker buildx):
#   podman build --platform linux/arm64 --build-arg VERSION=0.1.0 -t vipd:0.1.0-arm64 .
# Run with host networking and CAP_NET_ADMIN + CAP_NET_RAW
# (docs/deploying.md, "Container").
FROM scratch
ARG TARGETARCH
ARG VERSION
COPY dist/vipd-${VERSION}-linux-${TARGETARCH} /vipd
ENTRYPOINT ["/vipd"]

# Multi-stage: build the static binary, ship it alone.
# Run with host networking and CAP_NET_ADMIN + CAP_NET_RAW (see README).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY *.go Makefile ./
ARG VERSION=dev
RUN make build VERSION=$VERSION

FROM scratch
COPY --from=build /src/vipd /vipd
ENTRYPOINT ["/vipd"]

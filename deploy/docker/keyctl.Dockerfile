# syntax=docker/dockerfile:1
#
# keyctl: keystore management, for one-off jobs (import, issue, policy,
# identity). Build from the repository root:
#
#   docker build -f deploy/docker/keyctl.Dockerfile -t keyctl .
#   docker run --rm -v "$PWD/ks:/data" -w /data keyctl show www.example.com
#
# keyctl writes the keystore and secret files, so mount a volume for
# them; the image itself stays read-only. It listens on nothing unless
# told to (`keyctl issue --http-addr`), so nothing is exposed.
# Checked by deploy/dockerfile_test.go (go test ./deploy/...).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/keyctl ./cmd/keyctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyctl /usr/local/bin/keyctl
USER 65532:65532
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/keyctl"]

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Writes a CA and a server certificate for 127.0.0.1 into DIR, named as
# QEMU's tls-creds-x509 object reads them (ca-cert.pem, server-cert.pem,
# server-key.pem); the CA's key stays in DIR/ca-key.pem.
set -eu
dir=$1
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca-key.pem
openssl req -x509 -new -key ca-key.pem -out ca-cert.pem -days 3650 -subj /CN=qmh-test-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
key server-key.pem
openssl req -new -key server-key.pem -out server.csr -subj /CN=127.0.0.1
printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
    extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1 > server.ext
openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
    -out server-cert.pem -days 3650 -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca-cert.srl

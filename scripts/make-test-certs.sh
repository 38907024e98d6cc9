#!/usr/bin/env bash
# Makes the TLS fixtures of tests/security.rs (test-only keys, committed on purpose; never use
# them for anything else): a CA, a server certificate for localhost/127.0.0.1, a client
# certificate for partner "acme" signed by that CA, and one signed by another CA ("rogue").
# Valid for 100 years so the tests do not start failing one day.
set -euo pipefail
cd "$(dirname "$0")/../tests/fixtures/tls"
days=36500
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
ca() { # name
  ec "$1.key"
  openssl req -x509 -new -key "$1.key" -days $days -subj "/CN=sesame test $1" -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
leaf() { # name ca cn ext
  ec "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days $days \
    -extfile "$1.ext" -out "$1.pem"
  rm -f "$1.csr" "$1.ext"
}
ca ca
ca rogue-ca
leaf server ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
basicConstraints=critical,CA:FALSE"
leaf acme ca acme "extendedKeyUsage=clientAuth
basicConstraints=critical,CA:FALSE"
leaf rogue rogue-ca acme "extendedKeyUsage=clientAuth
basicConstraints=critical,CA:FALSE"
rm -f ./*.srl

#!/usr/bin/env bash
# A tour of Tessera in about a minute: the README's guide, run against a server.
#
#   TESSERA_BOOTSTRAP_API_KEY=dev-admin-key cargo run --release --bin tessera -- serve &
#   examples/tour.sh
#
# It creates a user with a password, enrols an authenticator app (drawing the returned QR
# code in the terminal with show_qr.py, beside this script), activates it with the code the
# app would show, logs in with the password and a second code, completes a step-up with a third
# and reads the user's audit events. Each TOTP code works once, so the tour waits for the
# app's next code twice (30 to 60 seconds in all).
#
# Needs bash, curl and python3 (standard library only: JSON, and the codes an app computes).
# Settings: TESSERA_URL (default http://127.0.0.1:8080), TESSERA_API_KEY (an admin key;
# default dev-admin-key), TOUR_LOGIN (default alice-<unix time>, so the tour can run again).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
URL=${TESSERA_URL:-http://127.0.0.1:8080}
ADMIN=${TESSERA_API_KEY:-dev-admin-key}
LOGIN=${TOUR_LOGIN:-alice-$(date +%s)}
PASSWORD='correct horse battery'

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'tour failed: %s\n' "$*" >&2; exit 1; }

# gql TOKEN QUERY [VARIABLES]: POSTs to /graphql (TOKEN may be empty), prints the response,
# fails on HTTP or GraphQL errors.
gql() {
  local token=$1 query=$2 variables=${3:-'{}'} body response
  body=$(python3 -c 'import json, sys
print(json.dumps({"query": sys.argv[1], "variables": json.loads(sys.argv[2])}))' "$query" "$variables")
  local auth=()
  if [[ -n $token ]]; then auth=(-H "Authorization: Bearer $token"); fi
  response=$(curl -sS --fail-with-body "$URL/graphql" "${auth[@]}" \
    -H 'Content-Type: application/json' -d "$body") || fail "HTTP: $response"
  if [[ $(get "$response" errors) != null ]]; then fail "$response"; fi
  printf '%s' "$response"
}

# get JSON PATH: one value of a response by a dotted path (data.user.id, data.items.0.name);
# strings bare, anything else as JSON.
get() {
  python3 -c 'import json, sys
value = json.loads(sys.argv[1])
for key in sys.argv[2].split("."):
    if isinstance(value, list):
        value = value[int(key)]
    else:
        value = (value or {}).get(key)
print(value if isinstance(value, str) else json.dumps(value))' "$1" "$2"
}

# expect WHAT GOT WANT
expect() { [[ $2 == "$3" ]] || fail "$1: expected $3, got $2"; }

# totp URI UNIX_TIME: the code an authenticator app shows at that time for an otpauth://
# URI (RFC 6238), then the time step it belongs to.
totp() {
  python3 -c 'import base64, hashlib, hmac, struct, sys, urllib.parse
query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(sys.argv[1]).query))
secret = query["secret"].upper()
key = base64.b32decode(secret + "=" * (-len(secret) % 8))
digits, period = int(query.get("digits", 6)), int(query.get("period", 30))
algorithm = getattr(hashlib, query.get("algorithm", "SHA1").lower())
step = int(sys.argv[2]) // period
mac = hmac.new(key, struct.pack(">Q", step), algorithm).digest()
offset = mac[-1] & 15
number = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
print(str(number % 10**digits).zfill(digits), step)' "$1" "$2"
}

# code_now URI: sets CODE to the code the app shows now and USED to its time step.
code_now() { read -r CODE USED < <(totp "$1" "$(date +%s)"); }

# next_code URI: waits until the app shows a code of a later step than USED (each code
# works once), then sets CODE and USED to it.
next_code() {
  local code step
  read -r code step < <(totp "$1" "$(date +%s)")
  if (( step <= USED )); then
    echo "waiting for the app's next code (each code works once) ..."
    while (( step <= USED )); do
      sleep 1
      read -r code step < <(totp "$1" "$(date +%s)")
    done
  fi
  CODE=$code USED=$step
}

step "1. Create a user with a password (admin key)"
r=$(gql "$ADMIN" 'mutation($login: String!, $password: String!) {
  createUserV2(input: {login: $login, email: "alice@example.com", password: $password}) { user { id login } } }' \
  "{\"login\": \"$LOGIN\", \"password\": \"$PASSWORD\"}")
USER=$(get "$r" data.createUserV2.user.id)
echo "user $(get "$r" data.createUserV2.user.login): $USER"

step "2. Enrol an authenticator app"
r=$(gql "$ADMIN" 'mutation($user: ID!) {
  enrollFactor(input: {userId: $user, type: TOTP, label: "phone"}) {
    factor { id status } totp { secretBase32 otpauthUri qrCodePng } } }' "{\"user\": \"$USER\"}")
FACTOR=$(get "$r" data.enrollFactor.factor.id)
URI=$(get "$r" data.enrollFactor.totp.otpauthUri)
expect "status" "$(get "$r" data.enrollFactor.factor.status)" PENDING_ACTIVATION
echo "factor $FACTOR, PENDING_ACTIVATION; scan this with the app:"
python3 "$HERE/show_qr.py" "$(get "$r" data.enrollFactor.totp.qrCodePng)"
echo "or type the secret into the app: $URI"

step "3. Activate with the code the app shows, written as the app shows it"
code_now "$URI"
r=$(gql "$ADMIN" 'mutation($factor: ID!, $code: String!) {
  activateFactor(input: {factorId: $factor, passCode: $code}) {
    factorResult factor { status } recoveryCodes } }' \
  "{\"factor\": \"$FACTOR\", \"code\": \"${CODE:0:3} ${CODE:3}\"}")
expect "activation" "$(get "$r" data.activateFactor.factorResult)" SUCCESS
expect "status" "$(get "$r" data.activateFactor.factor.status)" ACTIVE
echo "passCode \"${CODE:0:3} ${CODE:3}\": SUCCESS, factor ACTIVE"
echo "recovery codes (shown this once; keep them somewhere safe):"
python3 -c 'import json, sys
codes = json.loads(sys.argv[1])
assert len(codes) == 10, codes
print("  " + "  ".join(codes))' "$(get "$r" data.activateFactor.recoveryCodes)"

step "4. Verify: the same code again is a replay"
r=$(gql "$ADMIN" 'mutation($factor: ID!, $code: String!) {
  verifyFactor(input: {factorId: $factor, passCode: $code}) { factorResult factor { failedAttempts } } }' \
  "{\"factor\": \"$FACTOR\", \"code\": \"$CODE\"}")
expect "replay" "$(get "$r" data.verifyFactor.factorResult)" PASSCODE_REPLAYED
echo "PASSCODE_REPLAYED (not counted as a guess: failedAttempts $(get "$r" data.verifyFactor.factor.failedAttempts))"

step "5. Log in: the password, then a second factor (no token needed)"
r=$(gql "" 'mutation($login: String!, $password: String!) {
  login(input: {login: $login, password: $password}) { accessToken mfaRequired challenge { id } factors { id type } } }' \
  "{\"login\": \"$LOGIN\", \"password\": \"$PASSWORD\"}")
expect "mfaRequired" "$(get "$r" data.login.mfaRequired)" true
CHALLENGE=$(get "$r" data.login.challenge.id)
echo "mfaRequired, challenge $CHALLENGE, factors $(get "$r" data.login.factors)"
next_code "$URI"
r=$(gql "" 'mutation($challenge: ID!, $factor: ID!, $code: String!) {
  completeLogin(input: {challengeId: $challenge, factorId: $factor, passCode: $code}) { accessToken factorResult } }' \
  "{\"challenge\": \"$CHALLENGE\", \"factor\": \"$FACTOR\", \"code\": \"$CODE\"}")
expect "login" "$(get "$r" data.completeLogin.factorResult)" SUCCESS
TOKEN=$(get "$r" data.completeLogin.accessToken)
CLAIMS=$(python3 -c 'import base64, json, sys
part = sys.argv[1].split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
print(json.dumps({k: claims[k] for k in ("sub", "amr", "acr")}))' "$TOKEN")
echo "SUCCESS: an access token for the user, $CLAIMS"

step "6. Step up before a sensitive action (with the user's own token)"
r=$(gql "$TOKEN" 'mutation($user: ID!) {
  startStepUp(input: {userId: $user, state: {transfer: 42}, ttlSeconds: 120}) { challenge { id expiresAt } } }' \
  "{\"user\": \"$USER\"}")
CHALLENGE=$(get "$r" data.startStepUp.challenge.id)
echo "challenge $CHALLENGE, expires $(get "$r" data.startStepUp.challenge.expiresAt)"
next_code "$URI"
r=$(gql "$TOKEN" 'mutation($challenge: ID!, $factor: ID!, $code: String!) {
  completeStepUp(input: {challengeId: $challenge, factorId: $factor, passCode: $code}) { factorResult state } }' \
  "{\"challenge\": \"$CHALLENGE\", \"factor\": \"$FACTOR\", \"code\": \"$CODE\"}")
expect "step-up" "$(get "$r" data.completeStepUp.factorResult)" SUCCESS
echo "SUCCESS, state handed back: $(get "$r" data.completeStepUp.state)"

step "7. The audit log: everything that happened to the user (admin key)"
# On PostgreSQL the log shows an event once every older transaction on the cluster has
# ended, so the latest may take a moment to appear: wait (briefly) for the step-up's.
for _ in $(seq 1 40); do
  r=$(gql "$ADMIN" 'query($user: ID!) {
    events(filter: {userId: $user}, first: 50) {
      edges { node { aggregateType eventType payload metadata recordedAt } } } }' "{\"user\": \"$USER\"}")
  verified=$(python3 -c 'import json, sys
edges = json.loads(sys.argv[1])["data"]["events"]["edges"]
print(sum(e["node"]["eventType"] == "Verified" for e in edges))' "$r")
  if (( verified >= 2 )); then break; fi
  sleep 0.25
done
python3 -c 'import json, sys
for edge in json.loads(sys.argv[1])["data"]["events"]["edges"]:
    e = edge["node"]
    why = (e["payload"].get(e["eventType"]) or {}).get("reason", "")
    print("  %s  %-6s  %-22s  %-8s  %s" % (e["recordedAt"], e["aggregateType"], e["eventType"],
                                          why, e["metadata"].get("actor", "")))' "$r"

printf '\nDone: user %s has an active authenticator app.\n' "$LOGIN"

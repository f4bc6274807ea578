"""Validates a live server's /openapi.json with openapi-spec-validator and prints its paths.
Usage: check_openapi.py BASE_URL."""
import json
import sys
import urllib.request

from openapi_spec_validator import validate

with urllib.request.urlopen(f"{sys.argv[1]}/openapi.json") as resp:
    doc = json.load(resp)
validate(doc)
print(json.dumps({"openapi": doc["openapi"], "paths": sorted(doc["paths"])}))

"""Tool calling: formats.py (what models write), parser.py (text -> calls, streaming),
grammar.py (constrained decoding that keeps calls valid), request.py (the request's checks
and the messages its chat template gets)."""

"""The chat route's conversions: an OpenAI Chat Completions client served by an Anthropic
Messages upstream (`anthropic*`) or an OpenAI Responses upstream (`responses*`), request,
whole answer and stream, tools and usage included."""

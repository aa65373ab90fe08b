"""Local EMULATORS of remote APIs, for tests and offline demos. They are not AWS and not OpenAI:
they implement the documented request/response shapes closely enough for the real clients
(boto3 `bedrock`, any HTTP client) to talk to them, and answer with the offline captioner.

- `BedrockEmulator`: the Bedrock control plane for batch inference (Create/Get/List/Stop
  ModelInvocationJob, REST-JSON on 127.0.0.1) that runs jobs against an S3 endpoint (e.g. moto).
- `ChatCompletionsEmulator`: an OpenAI-compatible `/v1/chat/completions` with image input.
"""

from carsearch_emulators.bedrock import BedrockEmulator
from carsearch_emulators.openai import ChatCompletionsEmulator

__all__ = ["BedrockEmulator", "ChatCompletionsEmulator"]

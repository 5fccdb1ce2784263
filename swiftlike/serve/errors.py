"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""
from __future__ import annotations

from typing import Optional


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: Optional[str] = None, param: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def unauthorized() -> ApiError:
    return ApiError(401, "Invalid or missing API key: send `Authorization: Bearer KEY`.", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def model_not_found(model: str) -> ApiError:
    # The same answer for a model that does not exist and one this caller may not use: no tenant learns the
    # names of another tenant's adapters.
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found", param="model")


def queue_full(detail: str) -> ApiError:
    return ApiError(429, f"The server is at capacity ({detail}); retry shortly.", type="rate_limit_error",
                    code="queue_full", headers={"Retry-After": "1"})


def invalid(message: str, param: Optional[str] = None, code: str = "invalid_value") -> ApiError:
    return ApiError(422, message, code=code, param=param)

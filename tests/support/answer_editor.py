"""A user's script editing every answer in its response hook, loaded beside the addon (`-s`)."""


class AnswerEditor:
    def response(self, flow) -> None:
        flow.response.headers["x-edited-by-script"] = "yes"


addons = [AnswerEditor()]

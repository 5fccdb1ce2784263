"""A complete third-party swiftlike plugin: a model type, a template, a reward function and a command."""
import click
import swiftlike


@swiftlike.hookimpl
def register_models(register):
    register("hello-tiny-chat", hf="hello-org/Hello-Tiny-Chat", template="hello", tags=["hello"],
             lora_target_modules=["q_proj", "v_proj"])


@swiftlike.hookimpl
def register_templates(register):
    register("hello", chat_template="{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' %}"
             "{% generation %}{{ m.content }}\n{% endgeneration %}{% else %}{{ m.content }}\n{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}assistant: {% endif %}", stop_words=["\n"])


@swiftlike.hookimpl
def register_rewards(register):
    register("hello-polite", func="swiftlike_hello:polite", summary="1 when the answer says please or thanks")


def polite(completions, **columns):
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if any(w in t.lower() for w in ("please", "thank")) else 0.0 for t in texts]


@swiftlike.hookimpl
def register_commands(cli):
    @cli.command()
    def hello():
        """Say hello from a plugin."""
        click.echo("hello from swiftlike-hello")

//! Chat templates, rendered as transformers renders them
//! (`PreTrainedTokenizerBase.apply_chat_template`): Jinja with
//! `trim_blocks` and `lstrip_blocks` on, trailing newline of the template
//! dropped, Python string methods available (minijinja-contrib `pycompat`),
//! `raise_exception(msg)` defined, and the special tokens plus
//! `add_generation_prompt` in the context.

use minijinja::{Environment, Error, ErrorKind, context};

use super::error::DataError;
use super::schema::Message;
use super::tokenizer::SpecialTokens;

const TEMPLATE_NAME: &str = "chat_template";

/// Marks errors raised by the template itself, to tell them from bugs.
const RAISED: &str = "raise_exception: ";

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    special: SpecialTokens,
}

impl ChatTemplate {
    /// Compile `source`; `origin` says where it came from, for errors.
    pub fn new(
        source: &str,
        origin: &str,
        special: SpecialTokens,
    ) -> Result<ChatTemplate, DataError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{RAISED}{message}"),
                ))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| DataError::TemplateSyntax {
                origin: origin.to_string(),
                message: describe(&e),
            })?;
        Ok(ChatTemplate { env, special })
    }

    /// Render a conversation. The error is a message for the caller to
    /// attach to the row.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .expect("the template was added in new()");
        let special = &self.special;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => special.bos,
                eos_token => special.eos,
                pad_token => special.pad,
                unk_token => special.unk,
            })
            .map_err(|e| describe(&e))
    }
}

/// "raised an exception: MSG" for `raise_exception`, else "failed: ..." with
/// the template line.
fn describe(error: &Error) -> String {
    let detail = error.detail().unwrap_or_default();
    if let Some(message) = detail.strip_prefix(RAISED) {
        return format!("raised an exception: {message}");
    }
    let line = error
        .line()
        .map(|l| format!(" (template line {l})"))
        .unwrap_or_default();
    match detail {
        "" => format!("failed: {}{line}", error.kind()),
        detail => format!("failed: {}: {detail}{line}", error.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> SpecialTokens {
        SpecialTokens {
            bos: Some("<bos>".into()),
            eos: Some("<eos>".into()),
            ..Default::default()
        }
    }

    fn user(content: &str) -> Message {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }

    #[test]
    fn blocks_are_trimmed_like_transformers() {
        let source = "{% for m in messages %}\n    {% if m['role'] == 'user' %}\n{{ m['content'] | upper }}\n    {% endif %}\n{% endfor %}\n";
        let template = ChatTemplate::new(source, "test", tokens()).expect("compiles");
        assert_eq!(
            template
                .render(&[user("a"), user("b")], false)
                .expect("renders"),
            "A\nB\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let source = "{{ messages[0]['content'].strip().startswith('x') }}";
        let template = ChatTemplate::new(source, "test", tokens()).expect("compiles");
        // Python booleans print as `True`, as in transformers.
        assert_eq!(
            template.render(&[user("  xy ")], false).expect("renders"),
            "True"
        );
    }

    #[test]
    fn raise_exception_is_reported_as_such() {
        let source = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('System first!') }}{% endif %}";
        let template = ChatTemplate::new(source, "test", tokens()).expect("compiles");
        let err = template.render(&[user("a")], false).expect_err("raises");
        assert_eq!(err, "raised an exception: System first!");
    }
}

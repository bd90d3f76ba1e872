//! Key verification as the app sees it: the prompts an exchange raises,
//! its outcome on the status line, and asking whether a 1:1's other user
//! is verified.

use missive_proto::rest::ConversationKind;

use super::super::model::ConvKey;
use super::super::verify::VerifyUpdate;
use super::{App, Effect, Prompt};

impl App {
    pub(super) fn on_verify(&mut self, update: VerifyUpdate) {
        match update {
            VerifyUpdate::Offered { from, device } => {
                self.prompt = Some(Prompt::VerifyOffer { from, device });
            }
            VerifyUpdate::Waiting { user } => self.notify(format!("Verifying keys with {user}…")),
            VerifyUpdate::Compare { user, code } => {
                self.prompt = Some(Prompt::VerifyCompare { user, code });
            }
            VerifyUpdate::Verified {
                user,
                device,
                forwarded,
            } => {
                self.notify(match forwarded {
                    0 => format!("✓ {user}'s device {device} is verified"),
                    n => format!(
                        "✓ your device {device} is verified and has {n} room key{} from this one",
                        if n == 1 { "" } else { "s" }
                    ),
                });
                self.peer_verified.remove(&user);
                self.effects.push(Effect::CheckVerified { user });
            }
            VerifyUpdate::Failed(why) => {
                if matches!(
                    self.prompt,
                    Some(Prompt::VerifyOffer { .. } | Prompt::VerifyCompare { .. })
                ) {
                    self.prompt = None;
                }
                self.warn(why);
            }
        }
    }

    /// An encrypted 1:1 just opened: whether its other user is verified
    /// here, if not known yet.
    pub(super) fn check_verified(&mut self, key: &ConvKey) {
        let me = self.me.clone();
        let peer = self
            .conversation(key)
            .filter(|c| c.encrypted && c.kind == ConversationKind::Direct)
            .and_then(|c| c.peer(&me).map(str::to_owned));
        if let Some(user) = peer.filter(|user| !self.peer_verified.contains_key(user)) {
            self.effects.push(Effect::CheckVerified { user });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use ratatui::crossterm::event::KeyCode;

    #[test]
    fn verification_starts_with_v_and_prompts_for_each_decision() {
        // Goal: `v` on an encrypted 1:1 asks to verify its other user; a
        // request from another device and the codes to compare each show
        // as a y/n prompt whose answer becomes the matching action; a
        // plain chat cannot be verified from here.
        let verify_effects = |effects: Vec<Effect>| -> Vec<VerifyAction> {
            effects
                .into_iter()
                .filter_map(|effect| match effect {
                    Effect::Verify(action) => Some(action),
                    _ => None,
                })
                .collect()
        };
        let mut app = App::new("alice", "http://x");
        let mut sealed = summary(8, &["alice", "carol"], 1, 0);
        sealed.encrypted = true;
        online(&mut app, vec![summary(7, &["alice", "bob"], 3, 0), sealed]);
        app.take_effects();
        app.selected = Some(ConvKey::Id(7));
        app.focus = Focus::List;
        app.on_input(key(KeyCode::Char('v')));
        assert!(
            verify_effects(app.take_effects()).is_empty(),
            "not encrypted"
        );
        app.selected = Some(ConvKey::Id(8));
        app.on_input(key(KeyCode::Char('v')));
        assert_eq!(
            verify_effects(app.take_effects()),
            vec![VerifyAction::Start {
                user: "carol".into()
            }]
        );
        app.on_event(AppEvent::Verify(VerifyUpdate::Offered {
            from: "dave".into(),
            device: 4,
        }));
        assert!(
            app.prompt
                .as_ref()
                .is_some_and(|p| p.label().contains("dave (device 4)"))
        );
        app.on_input(key(KeyCode::Char('y')));
        assert_eq!(
            verify_effects(app.take_effects()),
            vec![VerifyAction::Accept]
        );
        app.on_event(AppEvent::Verify(VerifyUpdate::Compare {
            user: "dave".into(),
            code: "🐶 Dog".into(),
        }));
        app.on_input(key(KeyCode::Char('n')));
        assert_eq!(
            verify_effects(app.take_effects()),
            vec![VerifyAction::Mismatch]
        );
        assert!(app.prompt.is_none());
    }
}

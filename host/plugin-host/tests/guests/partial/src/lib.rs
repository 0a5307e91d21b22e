//! A component exporting only `init` and `command` of the imfree:plugin/plugin world: it must be refused with the
//! missing hooks named.

wit_bindgen::generate!({
    path: ["../../../../../wit/imfree-plugin@0.1.0", "wit"],
    world: "test:partial/partial",
    generate_all,
});

struct Partial;

impl Guest for Partial {
    fn init() -> Result<(), String> {
        imfree::plugin::log::log(imfree::plugin::log::Level::Info, "partial ready");
        Ok(())
    }
    fn command(_cmd: Command) -> Option<String> {
        Some("partial".into())
    }
}

export!(Partial);

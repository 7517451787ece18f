-- The password throttle of logins nobody registered (known users keep theirs in their event
-- stream). The key is a keyed hash of the normalised login, never the login itself, so the
-- table tells nothing about who was tried. `version` makes every update a compare-and-set:
-- concurrent failures on several nodes count exactly.
CREATE TABLE login_throttle
(
    key             text   PRIMARY KEY,
    failures        bigint NOT NULL,
    runs            bigint NOT NULL,
    throttled_until text,
    version         bigint NOT NULL
);

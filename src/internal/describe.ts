/** Texts for logs and messages: errors as people read them, URLs without their passwords. */

/**
 * A URL with its password replaced by ***, for logs, messages and /readyz: the one after the user
 * name, and the ones libpq also takes as parameters (?password=…, ?sslpassword=…).
 */
export const redactUrl = (url: string): string => {
  // Parsed only as what it should be: text that is not a postgres:// URL (no scheme, jdbc:postgresql://,
  // postgres:/ with one slash) parses as a URL of another kind, with the password left in its path.
  if (/^postgres(ql)?:\/\//i.test(url)) {
    try {
      const parsed = new URL(url)
      if (parsed.password !== "") parsed.password = "***"
      for (const key of [...parsed.searchParams.keys()]) {
        if (/password/i.test(key)) parsed.searchParams.set(key, "***")
      }
      return parsed.toString()
    } catch {
      // Not a URL after all (a stray character, a bad port): masked as text below.
    }
  }
  // Still never the password, and the rest to say what is wrong.
  return maskUserPassword(url).replace(/(password=)[^&]*/gi, "$1***")
}

// The user info starts after the first "//" (or ":/"), else at the start; its password runs from the first ":"
// to the last "@" (a password may hold / and @ itself, which is often why the text does not parse).
const maskUserPassword = (text: string): string => {
  const at = text.lastIndexOf("@")
  if (at < 0) return text
  const before = text.slice(0, at)
  const slashes = before.indexOf("//")
  const slash = slashes >= 0 ? slashes + 2 : before.indexOf(":/") >= 0 ? before.indexOf(":/") + 2 : 0
  const colon = before.indexOf(":", slash)
  return colon < 0 ? text : `${text.slice(0, colon + 1)}***${text.slice(at)}`
}

/** An error's text; pg reports refused dual-stack connects as an AggregateError with an empty message. */
export const errorText = (error: unknown): string => {
  if (error instanceof AggregateError && error.message === "") {
    return error.errors.map(errorText).join("; ")
  }
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return error.message !== "" ? error.message : typeof code === "string" ? code : error.name
  }
  return String(error)
}

// Line breaks and other control characters in a value (an error text, a reason, a job type) would break a log
// line or a table's rows apart: written as escapes ("\n"), on one line.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g

/** The text on one line, its control characters written as escapes. */
export const oneLine = (text: string): string =>
  text.replace(CONTROL, (char) => ({ "\n": "\\n", "\r": "\\r", "\t": "\\t" })[char] ?? `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`)

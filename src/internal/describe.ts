/** Texts for logs and messages: errors as people read them, URLs without their passwords. */

/**
 * A URL with its password replaced by ***, for logs, messages and /readyz: the one after the user
 * name, and the ones libpq also takes as parameters (?password=…, ?sslpassword=…).
 */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    for (const key of [...parsed.searchParams.keys()]) {
      if (/password/i.test(key)) parsed.searchParams.set(key, "***")
    }
    return parsed.toString()
  } catch {
    // Not a URL after all (a stray character, a bad port): still never the password, and the rest to say what is wrong.
    // Up to the last @: a password may hold / and @ itself (that is often why the URL does not parse).
    return url.replace(/(\/\/[^:/@]*:).*@/, "$1***@").replace(/(password=)[^&]*/gi, "$1***")
  }
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

<?php

declare(strict_types=1);

namespace Xio;

/**
 * One answer, whatever its status.
 *
 * `content` is the decoded body: JSON as PHP values (objects as associative arrays), text as
 * a string, anything else as Xio\Bytes; an empty body is null for HEAD, 204, 304 or a JSON
 * type, "" for text and empty Xio\Bytes otherwise. `headers` maps each lower-case name to
 * the list of its values in the order they came (two Set-Cookie: two values).
 */
final class Response
{
    /** @param array<string, list<string>> $headers */
    public function __construct(
        public readonly int $status,
        public readonly mixed $content,
        public readonly ?string $contentType,
        public readonly array $headers,
    ) {
    }

    /** Return the first value of header `$name` (any case), or null when it is absent. */
    public function header(string $name): ?string
    {
        return $this->headers[strtolower($name)][0] ?? null;
    }
}

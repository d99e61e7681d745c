<?php

declare(strict_types=1);

namespace Xio;

/** An answer that is not HTTP, was cut short, or whose body does not decode as its type says. */
class ResponseError extends TransportError
{
}

<?php
/**
 * Load the Xio\ classes without composer: `require '.../clients/php/autoload.php';`.
 *
 * The same PSR-4 mapping composer.json declares (Xio\Name → src/Name.php), for users who copy
 * the clients/php directory into a project that has no composer.
 */

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    $prefix = 'Xio\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});

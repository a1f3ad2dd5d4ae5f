import Foundation
import PackagePlugin

/// Embeds text and data files into a target as a generated Swift source file.
///
/// - Target `OpalOpenCL`: every `<package>/Kernels/*.cl` becomes an entry of
///   `let embeddedKernelSources: [String: String]` (kernel file name without `.cl` → source text).
/// - Target `Opal`: every file in `Sources/Opal/Resources/` becomes an entry of
///   `let embeddedResources: [String: String]` (file name → base64 of the bytes).
///
/// A missing or empty folder yields an empty dictionary. Each embedded file is an input of the
/// build command, so editing it rebuilds the target.
@main struct EmbedKernels: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let packageDirectory = context.package.directoryURL
        let mode: String
        let variable: String
        let directory: URL
        let files: [URL]
        switch target.name {
        case "OpalOpenCL":
            mode = "text"
            variable = "embeddedKernelSources"
            directory = packageDirectory.appending(path: "Kernels")
            files = listFiles(in: directory).filter { $0.pathExtension == "cl" }
        case "Opal":
            mode = "base64"
            variable = "embeddedResources"
            directory = packageDirectory.appending(path: "Sources/Opal/Resources")
            files = listFiles(in: directory)
        default:
            return []
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "\(variable).swift")
        let tool = try context.tool(named: "KernelEmbedder")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) file(s) into \(target.name) as \(variable)",
                executable: tool.url,
                arguments: ["--mode", mode, "--variable", variable, "--output", output.path(percentEncoded: false)]
                    + files.map { $0.path(percentEncoded: false) },
                inputFiles: files,
                outputFiles: [output]
            )
        ]
    }

    /// Regular, non-hidden files directly in `directory`, sorted by name; `[]` when it is missing.
    private func listFiles(in directory: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path(percentEncoded: false))) ?? []
        return names.sorted().filter { !$0.hasPrefix(".") }.compactMap { name in
            let url = directory.appending(path: name)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path(percentEncoded: false), isDirectory: &isDirectory),
                  !isDirectory.boolValue else { return nil }
            return url
        }
    }
}
